"""``liangcao abs``: one command per action of the receivable ABS contract (``liangcao abs deal purchase …``).

Generated from the ``abs.*`` contracts of the bundle a node runs (``liangcao.cli.contracts.family_app``, the
generator ``liangcao scf`` uses), so the commands cannot drift from the contract; the actions, who signs them
and the worked example are in ``docs/abs.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from liangcao.cli.contracts import family_app

if TYPE_CHECKING:
    from liangcao.contracts.base import Registry

HELP = "Receivable ABS: pool, notes, waterfall and triggers (one command per contract action)."


def build(registry: Registry) -> typer.Typer:
    """``liangcao abs``: a sub-command per ``abs.*`` contract of ``registry``."""
    return family_app(registry, "abs", HELP)


def _app() -> typer.Typer:
    from liangcao.apps.bundle import default_registry

    return build(default_registry())


app = _app()
