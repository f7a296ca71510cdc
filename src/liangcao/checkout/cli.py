"""``liangcao checkout ...``: the command line of ``liangcao.checkout``, mounted by ``liangcao.cli``."""

from __future__ import annotations

import typer

app = typer.Typer(help="checkout", no_args_is_help=True, add_completion=False)
