"""``liangcao tx`` and ``liangcao query``: any contract method by name, arguments as one JSON object.

``liangcao contract`` (``liangcao.cli.contracts``) offers the same with one option per argument.
"""

from __future__ import annotations

from typing import Annotated

import typer

from liangcao.cli.common import READER, Home, Reader, Signers, Url, json_object, query, submit


def tx_cmd(
    home: Home,
    contract: str,
    method: str,
    args: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    as_: Signers = [],  # noqa: B006
    url: Url = None,
    wait: Annotated[bool, typer.Option(help="wait for the commit")] = True,
) -> None:
    """Build, sign (locally) and submit a transaction; print the receipt. Exit 2 if the contract refused it."""
    submit(home, contract, method, json_object(args), as_, url, wait)


def query_cmd(
    home: Home,
    contract: str,
    method: str,
    args: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    as_: Reader = READER,
    url: Url = None,
) -> None:
    """Run a contract query on the node and print the result."""
    query(home, contract, method, json_object(args), as_, url)
