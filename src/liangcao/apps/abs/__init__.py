"""Receivable asset-backed securities on the consortium chain (``abs.deal``): see ``docs/abs.md``."""

from liangcao.apps.abs.common import AbsCode
from liangcao.apps.abs.deal import AbsDeal

__all__ = ["AbsCode", "AbsDeal"]
