"""c3ctl (alias c3): the command line.

Exit codes: 0 ok, 1 job or user error, 2 usage, 3 a service could not be reached.
"""

from __future__ import annotations

import sys

import click
import grpc
from rich.markup import escape

from c3 import __version__
from c3.errors import C3Error, from_rpc_error
from c3ctl import render
from c3ctl.cmd_accounts import apikey, balance, whoami
from c3ctl.cmd_admin import admin, upgrade
from c3ctl.cmd_completion import completion
from c3ctl.cmd_daemon import daemon, ls_files
from c3ctl.cmd_deploy import deploy
from c3ctl.cmd_hardware import list_hardware
from c3ctl.cmd_init import init
from c3ctl.cmd_jobs import cancel, logs, pull, squeue
from c3ctl.cmd_stack import down, status, up
from c3ctl.cmd_watch import watch
from c3ctl.data import data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="c3ctl")
def cli() -> None:
    """c3: edit locally, run on a warm remote GPU."""


for command in (
    admin, upgrade,
    init, deploy, squeue, logs, cancel, pull, list_hardware, balance, apikey, whoami,
    up, down, status, daemon, ls_files, watch, completion,
):
    cli.add_command(command)
cli.add_command(data)


def _unreachable_hint(error: C3Error) -> str:
    if error.exit_code == 3:
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
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
