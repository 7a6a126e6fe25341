"""`c3 run -- CMD [ARGS]...`: push the project and run one command on a warm agent, as an
ordinary job, exiting with the command's own exit status."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from c3 import config as project_config
from c3.config_rules import TIME_RE
from c3ctl import exitcodes
from c3ctl.cmd_deploy import deploy_request, run_followed, verbosity_options
from c3ctl.runview import RunView, mode_of


def check_command(command: Sequence[str], *, required: bool) -> tuple[str, ...]:
    """The argv as given (a leading `--` already taken by click), or a usage error."""
    if not command:
        if required:
            raise click.UsageError(
                "name the command to run after `--`, e.g. `c3 run -- python train.py --lr 0.1`"
            )
        return ()
    if not command[0]:
        raise click.UsageError("the command to run is an empty string: name a program")
    for i, arg in enumerate(command):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise click.UsageError(
                f"argument {i + 1} of the command is not valid UTF-8: pass it in a file in "
                "the project instead"
            ) from None
    return tuple(command)


def parse_time(value: str) -> int:
    match = TIME_RE.match(value.strip())
    seconds = 0
    if match:
        hours, minutes, secs = (int(g) for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a duration in HH:MM:SS, e.g. 02:00:00",
                                 param_hint="--time")
    return seconds


@click.command(epilog=exitcodes.HELP, context_settings={
    "ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--gpu", default="", metavar="G",
              help="GPU class or profile for this run (instead of the .c3 file's gpu).")
@click.option("-p", "--provider", default=lambda: os.environ.get("C3_PROVIDER", ""),
              help="Provider to run on (also C3_PROVIDER).")
@click.option("--time", "time_limit", default="", metavar="HH:MM:SS",
              help="Time limit for this run (instead of the .c3 file's time).")
@verbosity_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
def run_command(gpu: str, provider: str, time_limit: str, verbose: bool, quiet: bool,
                command: tuple[str, ...]) -> None:
    """Push the project and run CMD with ARGS on a warm agent, following its output.

    CMD runs in the project's environment (its python environment or docker image), with
    its datasets and outputs, in the job's working directory; every argument reaches it
    exactly as typed, never re-split by a shell. It is an ordinary job: `c3 squeue`,
    `c3 logs`, `c3 pull` and billing see it. Ctrl-C detaches; the job keeps running.
    """
    mode = mode_of(verbose, quiet)
    argv = check_command(command, required=True)
    seconds = parse_time(time_limit) if time_limit else 0
    cfg_path = project_config.find_project_file(Path.cwd())
    project_config.load_project(cfg_path)  # fail fast, with file:line, before any daemon work
    request = deploy_request(cfg_path.parent.resolve(), follow=True, provider=provider,
                             command=argv, gpu=gpu, time_limit_seconds=seconds)
    run_followed(request, RunView(mode))
