"""``liangcao dg``: dangerous-goods declarations, sealed on this side for the shipper, carrier and terminals
(``liangcao.client.dg.Declarations``); ``docs/dangerous-goods.md``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from liangcao.cli.common import Actor, Home, Url, fail, json_arg, member_id, node_errors, open_home, read_text

app = typer.Typer(
    help="Dangerous-goods declarations, sealed for the shipper, carrier and terminals.", no_args_is_help=True
)


def dg_key_path(home: Path, org: str) -> Path:
    """Where an organisation keeps its X25519 private key for declarations in a network folder."""
    from liangcao.node.home import valid_member_id

    if not valid_member_id(f"{org}/x"):
        raise ValueError(f"{org!r} is not an organisation id (letters, digits, '_' or '-': no path)")
    return home / "orgs" / org / "dg" / "x25519.pem"


def desk(home: Path, as_: str, url: str | None, fn: Callable[[Any], Any]) -> Any:
    """``fn(desk)`` for member ``as_`` with its organisation's key; refusals end the command with exit 2."""
    from liangcao.client import Client
    from liangcao.client.dg import Declarations
    from liangcao.crypto.signer import load_signer
    from liangcao.node.home import member_dir
    from liangcao.shipping import declaration as dg

    member_id(as_)
    h = open_home(home)
    org = as_.partition("/")[0]
    try:
        signer = load_signer(member_dir(h.root, as_))
        path = dg_key_path(h.root, org)
        key = dg.load_private(path.read_bytes()) if path.exists() else None
    except (OSError, ValueError) as exc:
        fail(f"cannot load the keys of {as_}: {exc}")
    try:
        with node_errors(), Client(url or h.url, h.auth().create(as_, 1)) as c:
            return fn(Declarations(c, signer, key))
    except dg.DeclarationError as exc:
        fail(str(exc))


@app.command("keygen")
def dg_keygen_cmd(home: Home, as_: Actor, url: Url = None) -> None:
    """Make the organisation's X25519 key (kept 0600 in the network folder) and register it on the ledger
    (as an admin of the organisation, e.g. org3/admin)."""
    from liangcao.crypto import keys
    from liangcao.node.home import member_dir
    from liangcao.shipping import declaration as dg

    member_id(as_)  # before any path is made from it: nothing is written for a bad name
    root = open_home(home).root
    if not (member_dir(root, as_) / "key.pem").exists():
        fail(f"{as_} is not a member of this network folder (no {member_dir(root, as_).relative_to(root)})")
    path = dg_key_path(root, as_.partition("/")[0])
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(keys.private_pem(dg.new_key()))
    entry = desk(home, as_, url, lambda d: d.register_key())
    print(f"{entry['org']} key {entry['fp']} registered at height {entry['height']}")


@app.command("submit")
def dg_submit_cmd(
    home: Home,
    decl_id: Annotated[
        str, typer.Argument(help="a name such as DG-2026-0001: the declaration is then yours/DG-2026-0001")
    ],
    file: Annotated[Path, typer.Argument(help="the declaration's content as JSON (see docs/dangerous-goods.md)")],
    carrier: Annotated[str, typer.Option(help="the carrier organisation")],
    as_: Actor,
    terminal: Annotated[
        list[str] | None, typer.Option(help="a terminal that reads it once approved (repeatable)")
    ] = None,
    url: Url = None,
) -> None:
    """Seal a declaration for your organisation and the carrier, and submit it."""
    content = json_arg(read_text(file), str(file))
    r = desk(home, as_, url, lambda d: d.submit(decl_id, content, carrier=carrier, terminals=terminal or []))
    print(json.dumps(r))


@app.command("amend")
def dg_amend_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    file: Annotated[Path, typer.Argument(help="the amended content as JSON")],
    as_: Actor,
    terminal: Annotated[list[str] | None, typer.Option(help="replace the terminals (repeatable)")] = None,
    url: Url = None,
) -> None:
    """Submit a new version of a declaration, linked to the latest one."""
    content = json_arg(read_text(file), str(file))
    print(json.dumps(desk(home, as_, url, lambda d: d.amend(decl_id, content, terminals=terminal))))


@app.command("approve")
def dg_approve_cmd(
    home: Home, decl_id: Annotated[str, typer.Argument()], version: int, as_: Actor, url: Url = None
) -> None:
    """As the carrier: open the version, check it, and let its terminals read it."""
    print(json.dumps(desk(home, as_, url, lambda d: d.approve(decl_id, version))))


@app.command("reject")
def dg_reject_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    version: int,
    reason: Annotated[str, typer.Option(help="why, for the shipper (sealed: only shipper and carrier read it)")],
    as_: Actor,
    url: Url = None,
) -> None:
    """As the carrier: refuse the version, saying why."""
    print(json.dumps(desk(home, as_, url, lambda d: d.reject(decl_id, version, reason))))


@app.command("show")
def dg_show_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    as_: Actor,
    version: Annotated[int, typer.Option(help="0: the latest")] = 0,
    url: Url = None,
) -> None:
    """Open a version your organisation may read and print it with its status and links."""
    import msgspec

    def show(d: Any) -> dict[str, Any]:
        opened = d.read(decl_id, version)
        meta = {k: opened.record[k] for k in ("id", "version", "prev", "status", "shipper", "carrier", "terminals")}
        decision = opened.record.get("decision")
        if decision is not None and opened.reason is not None:  # sealed on the ledger; opened here
            decision = {**decision, "reason": opened.reason}
        return {**meta, "decision": decision, "content": msgspec.to_builtins(opened.content)}

    print(json.dumps(desk(home, as_, url, show), ensure_ascii=False, indent=1))


@app.command("versions")
def dg_versions_cmd(home: Home, decl_id: Annotated[str, typer.Argument()], as_: Actor, url: Url = None) -> None:
    """A declaration's versions, oldest first (no content)."""
    for v in desk(home, as_, url, lambda d: d.versions(decl_id)):
        print(f"v{v['version']} prev={v['prev'] or '-'} {v['status']} terminals={','.join(v['terminals']) or '-'}")
