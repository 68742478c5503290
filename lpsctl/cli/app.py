"""The `lpsctl` command: Typer app, command groups, and the one place user errors become one-line messages."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from lpsctl import __version__, threads
from lpsctl.cli import config_cmd, data, train
from lpsctl.cli.demo import demo_command
from lpsctl.cli.deploy import export_command, predict_command
from lpsctl.cli.evaluate import eval_command
from lpsctl.cli.predict import export_masks_command, fuse_command
from lpsctl.cli.visualize_cmd import visualize_command
from lpsctl.errors import LpsctlError

app = typer.Typer(
    name="lpsctl",
    help="Location-based panoptic segmentation: EfficientPS with a SOLOv2 instance head.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo")(demo_command)
app.add_typer(data.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.add_typer(train.app, name="train")
app.command("export-masks")(export_masks_command)
app.command("fuse")(fuse_command)
app.command("eval")(eval_command)
app.command("visualize")(visualize_command)
app.command("predict")(predict_command)
app.command("export")(export_command)

err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lpsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app; a user error (LpsctlError) is one red line on stderr and exit code 2."""
    # albumentations checks PyPI for a newer version when imported unless told not to; lpsctl never goes online by
    # itself. Set for this process before any command imports it (a library user decides for their own process).
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        threads.configure()  # one OpenMP thread per usable core, sleeping waits on busy cores (before torch)
        app(args=argv, prog_name="lpsctl")
    except LpsctlError as error:
        err_console.print(f"[bold red]error:[/] {user_message(error)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as error:  # a read-only or full output folder, an output path that is a file, …
        where = f": {error.filename}" if error.filename else ""
        err_console.print(f"[bold red]error:[/] {error.strerror or error}{where}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


def user_message(error: Exception) -> str:
    """The one-line message of a user error, also when a DataLoader worker raised it: PyTorch re-raises those with
    "Caught DataError in DataLoader worker process 0. Original Traceback …" and the original message last."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith(type(error).__name__) else last
    return text
