"""What every command shares: the options (defined once, here), consoles, failing, and talking to a node.

Every command that can fail exits non-zero with a one-line reason (:func:`fail`); none prints a traceback
for bad input. Node answers end a command the same way everywhere (:func:`node_errors`): a refused
transaction exits 2, any other error or no connection exits 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from liangcao.codes import Code
from liangcao.errors import LiangcaoError

if TYPE_CHECKING:  # importing the node home pulls in the node; commands import it when they run
    from liangcao.node.home import NodeHome

console = Console()
err = Console(stderr=True)

# ---- options ------------------------------------------------------------------------------------------------
Home = Annotated[Path, typer.Option("--home", help="the network folder made by 'network init'")]
NodeDir = Annotated[
    str, typer.Option("--node", help="the organisation's node folder in the network folder, e.g. node or nodes/org2")
]
Url = Annotated[str | None, typer.Option("--url", help="node URL (default from node.json)")]
Signers = Annotated[list[str], typer.Option("--as", help="signing member, e.g. org1/alice (repeat for several)")]
Actor = Annotated[str, typer.Option("--as", help="the member acting, e.g. org1/alice")]
Reader = Annotated[str, typer.Option("--as", help="member to read as")]
AsJson = Annotated[
    bool, typer.Option("--json", help="machine-readable output (benchmarks: one JSON object on the last line)")
]

READER = "org1/admin"  # whom reads act as when --as is not given
NODE_DIR = "node"  # the embedded node's folder in a network folder


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


# ---- checked input ------------------------------------------------------------------------------------------
#: A node folder inside a network folder (``node``, ``nodes/org2``): plain names, never ``..`` or absolute.
_NODE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_-]{0,63})?")


def open_home(home: Path, node: str = NODE_DIR) -> NodeHome:
    """The node folder ``node`` of network folder ``home``; exit 1 naming the problem if it cannot be opened."""
    from liangcao.node.home import NodeHome

    if not _NODE_DIR.fullmatch(node):
        fail(f"--node {node!r} is a folder of the network folder such as node or nodes/org2 (plain names, no '..')")
    try:
        return NodeHome.open(home, node)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc))


def member_id(member: str, option: str = "--as") -> str:
    """A member id that will name folders (``orgs/<org>/members/<name>``), checked before anything is read or
    written: ``org/name`` with plain names only (no path separator, no ``..``); exit 1 otherwise."""
    from liangcao.node.home import valid_member_id

    if not valid_member_id(member):
        fail(
            f"{option} {member!r} is not ORG/MEMBER such as org1/alice "
            "(an organisation id and a member name: letters, digits, '_' or '-', no path)"
        )
    return member


def json_arg(text: str, what: str) -> Any:
    """``text`` decoded as liangcao JSON (no floats, bounded depth); exit 1 naming ``what`` otherwise."""
    from liangcao import encoding

    try:
        return encoding.decode(text.encode())
    except LiangcaoError as exc:
        fail(f"{what} is not valid JSON for liangcao: {exc.message}")


def json_object(text: str, what: str = "ARGS") -> dict[str, Any]:
    """:func:`json_arg` that must be an object (a method's arguments)."""
    parsed = json_arg(text, what)
    if not isinstance(parsed, dict):
        fail(f"{what} must be a JSON object")
    return parsed


def read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")


# ---- talking to a node --------------------------------------------------------------------------------------
@contextmanager
def node_errors() -> Iterator[None]:
    """Node answers that end a command: a refused transaction exits 2, other errors and no connection exit 1."""
    from liangcao.client import ClientError, Refused

    try:
        yield
    except Refused as exc:
        fail(f"refused ({exc.code}): {exc.message}", 2)
    except ClientError as exc:
        fail(f"{exc.code} {exc.message}")
    except OSError as exc:
        fail(f"cannot reach the node: {exc}")


def read(home: Path, as_: str, url: str | None, fn: Callable[[Any], Any]) -> Any:
    """``fn(client)`` with a client reading as member ``as_``; node errors end the command with exit 1."""
    from liangcao.client import Client

    h = open_home(home)
    with node_errors(), Client(url or h.url, h.auth().create(as_, 1)) as c:
        return fn(c)


def submit(
    home: Path, contract: str, method: str, args: dict[str, Any], as_: list[str], url: str | None, wait: bool
) -> None:
    """Build, sign with the members' keys from the network folder and submit; print the answer (the receipt).
    Exit 2 if the contract refused the transaction."""
    from liangcao.client import Client, ClientError
    from liangcao.crypto.signer import load_signer
    from liangcao.node.home import member_dir

    h = open_home(home)
    if not as_:
        fail("name at least one signer with --as ORG/MEMBER")
    as_ = [member_id(m) for m in as_]
    try:
        signers = [load_signer(member_dir(h.root, m)) for m in as_]
    except (FileNotFoundError, ValueError) as exc:
        fail(f"cannot load signer: {exc}")
    try:
        with Client(url or h.url, chain_id=h.chain_id()) as c:
            result = c.submit(c.build(contract, method, args, signers), wait=wait)
    except ClientError as exc:
        fail(f"{exc.code} {exc.message}")
    except OSError as exc:
        fail(f"cannot reach the node: {exc}")
    console.print_json(json.dumps(result))
    if result.get("receipt") and result["receipt"]["code"] != Code.OK:
        raise typer.Exit(2)


def query(home: Path, contract: str, method: str, args: dict[str, Any], as_: str, url: str | None) -> None:
    """Run a contract query on the node as member ``as_`` and print the result."""
    console.print_json(json.dumps(read(home, as_, url, lambda c: c.query(contract, method, args))))
