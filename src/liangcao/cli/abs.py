"""``liangcao abs ...``: the abs contracts' actions."""

from __future__ import annotations

import typer

app = typer.Typer(help="abs", no_args_is_help=True, add_completion=False)
