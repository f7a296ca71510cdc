"""``liangcao credit ...``: the command line of ``liangcao.credit``, mounted by ``liangcao.cli``."""

from __future__ import annotations

import typer

app = typer.Typer(help="credit", no_args_is_help=True, add_completion=False)
