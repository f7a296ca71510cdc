"""``liangcao authn ...``: the command line of ``liangcao.authn``, mounted by ``liangcao.cli``."""

from __future__ import annotations

import typer

app = typer.Typer(help="authn", no_args_is_help=True, add_completion=False)
