"""``liangcao cover ...``: the cover contracts' actions."""

from __future__ import annotations

import typer

app = typer.Typer(help="cover", no_args_is_help=True, add_completion=False)
