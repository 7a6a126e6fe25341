"""c3ctl (alias c3): the command line.

Exit codes: 0 ok, 1 user error, 2 usage, 3 a service could not be reached; `run` and
`deploy -f` exit as their job did (c3ctl/exitcodes.py).
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import grpc
from rich.markup import escape

from c3 import __version__
from c3.errors import C3Error, from_rpc_error
from c3ctl import render

# Command name -> "module:attribute". Modules are imported only for the command that runs
# (and all of them for --help), so `c3ctl deploy` does not pay for cryptography or tables.
COMMANDS = {
    "init": "c3ctl.cmd_init:init",
    "deploy": "c3ctl.cmd_deploy:deploy",
    "watch": "c3ctl.cmd_watch:watch",
    "run": "c3ctl.cmd_run:run_command",
    "squeue": "c3ctl.cmd_jobs:squeue",
    "logs": "c3ctl.cmd_jobs:logs",
    "cancel": "c3ctl.cmd_jobs:cancel",
    "pull": "c3ctl.cmd_jobs:pull",
    "data": "c3ctl.data:data",
    "list": "c3ctl.cmd_hardware:list_hardware",
    "balance": "c3ctl.cmd_accounts:balance",
    "apikey": "c3ctl.cmd_accounts:apikey",
    "whoami": "c3ctl.cmd_accounts:whoami",
    "admin": "c3ctl.cmd_admin:admin",
    "upgrade": "c3ctl.cmd_admin:upgrade",
    "up": "c3ctl.cmd_stack:up",
    "down": "c3ctl.cmd_stack:down",
    "status": "c3ctl.cmd_stack:status",
    "daemon": "c3ctl.cmd_daemon:daemon",
    "ls-files": "c3ctl.cmd_daemon:ls_files",
    "completion": "c3ctl.cmd_completion:completion",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit status: 0 ok, 1 user error, 2 usage error, 3 a service could not be "
             "reached; `run` and `deploy -f` exit as their job did (see `c3 run --help`).")
@click.version_option(__version__, prog_name="c3ctl")
def cli() -> None:
    """c3: edit locally, run on a warm remote GPU."""


def _unreachable_hint(error: C3Error) -> str:
    if error.exit_code == 3 and "c3ctl up" not in str(error):
        return f"{error} (is the stack running? `c3ctl up` starts a local one)"
    return str(error)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="c3ctl", standalone_mode=False)
    except click.exceptions.Abort:
        render.err.print("aborted")
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except C3Error as exc:
        render.err.print(f"[red]error:[/] {escape(_unreachable_hint(exc))}")
        sys.exit(exc.exit_code)
    except grpc.RpcError as exc:
        error = from_rpc_error(exc)
        render.err.print(f"[red]error:[/] {escape(_unreachable_hint(error))}")
        sys.exit(error.exit_code)
    except BrokenPipeError:
        # Whoever read the output went away (`c3ctl squeue | head`): nothing to report.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        # A local file c3ctl cannot read or write: the user's to fix, not a bug.
        if exc.filename:
            message = f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions"
        else:
            message = str(exc.strerror or exc)
        render.err.print(f"[red]error:[/] {escape(message)}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
