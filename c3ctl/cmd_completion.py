"""`c3ctl completion SHELL`: the shell completion script for bash, zsh or fish."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELL_HINTS = {
    "bash": 'eval "$(c3ctl completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(c3ctl completion zsh)"    # in ~/.zshrc',
    "fish": "c3ctl completion fish > ~/.config/fish/completions/c3ctl.fish",
}


@click.command()
@click.argument("shell", type=click.Choice(sorted(SHELL_HINTS)))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (see --help for where it goes)."""
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None
    source = cls(root, {}, "c3ctl", "_C3CTL_COMPLETE").source()
    click.echo(source)


completion.help = (completion.help or "") + "\n\n" + "\n".join(f"  {v}" for v in SHELL_HINTS.values())
