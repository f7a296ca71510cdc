"""``liangcao demo``: a consortium, its node and the scenario through the SDK (``liangcao.demo``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from liangcao.cli.common import console, fail
from liangcao.errors import LiangcaoError


def demo_cmd(
    home: Annotated[
        Path | None, typer.Option("--home", help="keep the network here (default: a temporary folder)")
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535)] = 7800,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="keep serving after the scenario")] = True,
) -> None:
    """Create a consortium, start its node, run the scenario through the SDK and keep serving."""
    from liangcao.demo import run_demo

    home_dir = home or Path(tempfile.mkdtemp(prefix="liangcao-demo-"))
    try:
        run_demo(home_dir, port, serve, console)
    except LiangcaoError as exc:
        fail(f"{exc.code} {exc.message}")
