"""``liangcao risk ...``: the command line of ``liangcao.risk``, mounted by ``liangcao.cli``."""

from __future__ import annotations

import typer

app = typer.Typer(help="risk", no_args_is_help=True, add_completion=False)
