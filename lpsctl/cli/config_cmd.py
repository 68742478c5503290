"""`lpsctl config show`: the resolved config as YAML."""

from __future__ import annotations

from pathlib import Path

import typer

from lpsctl.cli.options import CONFIG, SET, resolve_config
from lpsctl.config import dump

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@app.command("show")
def show(config: Path | None = CONFIG, overrides: list[str] | None = SET) -> None:
    """Print the resolved config (defaults, then --config, then --set) as YAML."""
    typer.echo(dump(resolve_config(config, overrides)), nl=False)
