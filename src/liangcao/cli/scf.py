"""``liangcao scf``: one command per supply-chain finance action (``liangcao scf vouchers split …``).

Generated from the ``scf.*`` contracts (``liangcao.cli.contracts``), each contract a sub-command named
without its ``scf.`` prefix; the actions and who may take them are in ``docs/scf.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from liangcao.cli.contracts import family_app

if TYPE_CHECKING:
    from liangcao.contracts.base import Registry


def build(registry: Registry) -> typer.Typer:
    """``liangcao scf``: a sub-command per ``scf.*`` contract of ``registry``."""
    return family_app(registry, "scf", "Supply-chain finance: one command per contract action.")
