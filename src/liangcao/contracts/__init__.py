"""The contract runtime: the programming model, the registry and the system contracts."""

from liangcao.contracts.base import Args, Context, Contract, NoArgs, Registry, Signer, query, transaction

__all__ = ["Args", "Context", "Contract", "NoArgs", "Registry", "Signer", "query", "transaction"]
