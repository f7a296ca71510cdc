"""The ``liangcao`` command line (typer + rich).

Every command that can fail exits non-zero with a one-line reason; none prints a traceback for bad input.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from liangcao.errors import LiangcaoError

app = typer.Typer(
    help="liangcao: a consortium ledger for e-commerce fintech.", no_args_is_help=True, add_completion=False
)
network_app = typer.Typer(help="Create and inspect a local network.", no_args_is_help=True)
node_app = typer.Typer(help="Run a node.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens: read (the default) or write, and their revocation.", no_args_is_help=True)
app.add_typer(network_app, name="network")
app.add_typer(node_app, name="node")
app.add_typer(token_app, name="token")


def _pay_app() -> None:
    from liangcao.payments.cli import pay_app

    app.add_typer(pay_app, name="pay", no_args_is_help=True)


_pay_app()
console = Console()
err = Console(stderr=True)

Home = Annotated[Path, typer.Option("--home", help="the network folder made by 'network init'")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


#: A node folder inside a network folder (``node``, ``nodes/org2``): plain names, never ``..`` or absolute.
_NODE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_-]{0,63})?")


def _home(home: Path, node: str = "node") -> Any:
    from liangcao.node.home import NodeHome

    if not _NODE_DIR.fullmatch(node):
        fail(f"--node {node!r} is a folder of the network folder such as node or nodes/org2 (plain names, no '..')")
    try:
        return NodeHome.open(home, node)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc))


def _member_id(member: str, option: str = "--as") -> str:
    """A member id that will name folders (``orgs/<org>/members/<name>``), checked before anything is read or
    written: ``org/name`` with plain names only (no path separator, no ``..``); exit 1 otherwise."""
    from liangcao.node.home import valid_member_id

    if not valid_member_id(member):
        fail(
            f"{option} {member!r} is not ORG/MEMBER such as org1/alice "
            "(an organisation id and a member name: letters, digits, '_' or '-', no path)"
        )
    return member


def _json_arg(text: str, what: str) -> Any:
    from liangcao import encoding

    try:
        return encoding.decode(text.encode())
    except LiangcaoError as exc:
        fail(f"{what} is not valid JSON for liangcao: {exc.message}")


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")


# ---- network ----------------------------------------------------------------------------------------------
@network_app.command("init")
def network_init(
    out: Annotated[Path, typer.Option("--out", help="folder to create")],
    orgs: Annotated[int, typer.Option("--orgs", min=1, max=64, help="number of organisations")] = 3,
    chain_id: Annotated[str, typer.Option("--chain-id")] = "liangcao-local",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 7800,
    org_types: Annotated[
        str | None,
        typer.Option(
            "--org-types", help="comma-separated type of each organisation, e.g. core_enterprise,supplier,bank"
        ),
    ] = None,
) -> None:
    """Keys, certificates, genesis and node configuration for ORGS organisations."""
    from liangcao.crypto.identity import ORG_TYPES
    from liangcao.node.home import init_network

    types = [t.strip() for t in org_types.split(",")] if org_types else None
    if types is not None:
        unknown = sorted(set(types) - set(ORG_TYPES))
        if unknown:
            fail(f"unknown organisation types {', '.join(unknown)}; known: {', '.join(sorted(ORG_TYPES))}")
        if len(types) != orgs:
            fail(f"--org-types names {len(types)} types for {orgs} organisations")
    try:
        c = init_network(out, orgs, chain_id=chain_id, port=port, org_types=types)
    except FileExistsError as exc:
        fail(str(exc))
    console.print(f"Created {orgs} organisations in {out} (chain {c.chain_id}, genesis {c.genesis.hash[:16]}…)")
    for o in c.orgs:
        console.print(f"  {o.org_id:6s} {o.org_type:16s} members: {', '.join(o.members)}")
    console.print(f"Start the node with: liangcao node start --home {out}")


@network_app.command("up")
def network_up(
    home: Home,
    orgs: Annotated[int, typer.Option("--orgs", min=1, max=16, help="organisations (for a new network)")] = 3,
    block_txs_max: Annotated[int, typer.Option(help="orderers cut at this many transactions")] = 1000,
    block_wait_ms: Annotated[int, typer.Option(help="or when the oldest pending is this old")] = 20,
) -> None:
    """Start a local consortium: one nats-server (JetStream cluster) and one node per organisation."""
    from liangcao.node import network

    try:
        state = network.up(home, orgs, block_txs_max=block_txs_max, block_wait_ms=block_wait_ms)
    except (RuntimeError, OSError, ValueError) as exc:
        fail(str(exc))
    for o in state["orgs"]:
        console.print(f"  {o['org']:6s} node http://127.0.0.1:{o['port']}  nats 127.0.0.1:{o['nats_port']}")
    console.print(f"Consortium up in {home}; 'liangcao network status --home {home}', 'network down' to stop.")


@network_app.command("status")
def network_status(home: Home, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each organisation's node and server: up or down, height, head, fork alarms. Exit 1 if any is not ok."""
    from rich.table import Table

    from liangcao.node import network

    try:
        rows = network.status(home)
    except FileNotFoundError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(rows))
    else:
        table = Table("org", "node", "nats", "height", "head", "status", "fork alarms", "url")
        for r in rows:
            head = (r["block_hash"] or "")[:16]
            table.add_row(
                r["org"], r["node"], r["nats"], str(r["height"]), head, r["status"], str(r["forks"]), r["url"]
            )
        console.print(table)
    if any(r["status"] != "ok" or r["nats"] == "down" for r in rows):
        raise typer.Exit(1)


@network_app.command("add-org")
def network_add_org(
    home: Home,
    org_type: Annotated[str, typer.Option("--type", help="the new organisation's type")] = "logistics",
) -> None:
    """Admit a new organisation by a majority of admins and start its node; it catches up from the stream."""
    from liangcao.crypto.identity import ORG_TYPES
    from liangcao.node import network

    if org_type not in ORG_TYPES:
        fail(f"unknown organisation type {org_type}; known: {', '.join(sorted(ORG_TYPES))}")
    try:
        receipt = network.add_org(home, org_type)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(f"admitted in tx {receipt.get('tx_id', '')[:16]}…; its node is up and catching up")


@network_app.command("down")
def network_down(home: Home) -> None:
    """Stop the local consortium: nodes first (each commits what it admitted), then the servers."""
    from liangcao.node import network

    try:
        network.down(home)
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print("consortium stopped")


# ---- node -------------------------------------------------------------------------------------------------
@node_app.command("start")
def node_start(
    home: Home,
    host: Annotated[str | None, typer.Option(help="listen address (default from node.json)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from node.json)")] = None,
    block_txs_max: Annotated[int | None, typer.Option(help="cut a block at this many transactions")] = None,
    block_wait_ms: Annotated[int | None, typer.Option(help="or when the oldest pending is this old")] = None,
    verify_workers: Annotated[int | None, typer.Option(help="signature-checking processes (default: cores)")] = None,
    node_dir: Annotated[
        str, typer.Option("--node", help="the organisation's node folder in the network folder, e.g. nodes/org2")
    ] = "node",
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="comma-separated NATS server URLs of the consortium's JetStream cluster"),
    ] = None,
    custody: Annotated[
        bool | None,
        typer.Option(
            "--custody/--no-custody",
            help="let the node sign EPCIS captures as a member with that member's key from the network folder, "
            "for a write token (default from node.json: off)",
        ),
    ] = None,
) -> None:
    """Run the node in the foreground; SIGINT/SIGTERM stop it after committing what it admitted.

    With --nats (or "nats" in node.json) it orders through the consortium's JetStream cluster.
    Without --custody (or "custody": true in node.json) the node holds no member's key: members sign."""
    from liangcao.node.home import Server

    h = _home(home, node_dir)
    urls = [u.strip() for u in nats.split(",") if u.strip()] if nats else None
    try:
        node = h.node(
            block_txs_max=block_txs_max, block_wait_ms=block_wait_ms, verify_workers=verify_workers, nats=urls
        )
    except (LiangcaoError, ValueError, RuntimeError, TimeoutError) as exc:
        fail(getattr(exc, "message", str(exc)))
    bind_host = host or str(h.config["host"])
    bind_port = port or int(h.config["port"])
    head = node.head
    console.print(
        f"liangcao node for {h.config['org']}: chain {head.chain_id} at height {head.height}, serving http://{bind_host}:{bind_port}"
    )
    sys.stdout.flush()
    custody_root = h.custody_root(custody)
    if custody_root is not None:
        console.print(f"custody on: signs captures for write tokens with member keys under {custody_root}/orgs")
    Server(node, h.auth(), bind_host, bind_port, custody=custody_root).run()
    console.print("node stopped cleanly")


@node_app.command("rebuild")
def node_rebuild(home: Home) -> None:
    """Re-derive state and indexes from the stored blocks alone (the node must be stopped)."""
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime
    from liangcao.ledger.chain import Ledger

    h = _home(home)
    ledger = Ledger.open(h.store_path, ContractRuntime(default_registry()))
    try:
        n = ledger.rebuild()
    except LiangcaoError as exc:
        fail(exc.message)
    finally:
        ledger.close()
    console.print(f"rebuilt state and indexes from {n} blocks")


# ---- tokens -----------------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    home: Home,
    member: Annotated[str, typer.Option(help="the member the token reads as, e.g. org1/alice")],
    days: Annotated[int, typer.Option(min=1, max=366)] = 30,
    scope: Annotated[
        str, typer.Option(help="read (the default), or write: also lets a custody node sign captures as the member")
    ] = "read",
    node_dir: Annotated[str, typer.Option("--node", help="the node folder whose secret signs the token")] = "node",
) -> None:
    """Issue a token (needs the node's token.secret: an admin's command)."""
    from liangcao.api.auth import SCOPES

    if scope not in SCOPES:
        fail(f"--scope is one of: {', '.join(SCOPES)}")
    console.print(_home(home, node_dir).auth().create(member, days, scope=scope), soft_wrap=True)


@token_app.command("revoke")
def token_revoke(
    home: Home,
    member: Annotated[str, typer.Option(help="the member whose tokens to void, e.g. org1/alice")],
    node_dir: Annotated[str, typer.Option("--node", help="the node folder whose tokens to revoke")] = "node",
) -> None:
    """Void every token of a member issued until now; the running node refuses them and ends their streams."""
    at = _home(home, node_dir).auth().revoke(member)
    console.print(f"tokens of {member} issued up to {at} ms are revoked; issue a new one with 'token create'")


# ---- transactions and queries -----------------------------------------------------------------------------
@app.command("tx")
def tx_cmd(
    home: Home,
    contract: str,
    method: str,
    args: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    as_: Annotated[list[str], typer.Option("--as", help="signing member, e.g. org1/alice (repeat for several)")] = [],  # noqa: B006
    url: Annotated[str | None, typer.Option(help="node URL (default from node.json)")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the commit")] = True,
) -> None:
    """Build, sign (locally) and submit a transaction; print the receipt. Exit 2 if the contract refused it."""
    parsed = _json_arg(args, "ARGS")
    if not isinstance(parsed, dict):
        fail("ARGS must be a JSON object")
    _submit(home, contract, method, parsed, as_, url, wait)


def _submit(
    home: Path, contract: str, method: str, args: dict[str, Any], as_: list[str], url: str | None, wait: bool
) -> None:
    from liangcao.client import Client, ClientError
    from liangcao.node.home import load_signer, member_dir

    h = _home(home)
    if not as_:
        fail("name at least one signer with --as ORG/MEMBER")
    as_ = [_member_id(m) for m in as_]
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
    if result.get("receipt") and result["receipt"]["code"] != 0:
        raise typer.Exit(2)


@app.command("query")
def query_cmd(
    home: Home,
    contract: str,
    method: str,
    args: Annotated[str, typer.Argument(help="arguments as a JSON object")] = "{}",
    as_: Annotated[str, typer.Option("--as", help="member to read as")] = "org1/admin",
    url: Annotated[str | None, typer.Option(help="node URL (default from node.json)")] = None,
) -> None:
    """Run a contract query on the node and print the result."""
    parsed = _json_arg(args, "ARGS")
    if not isinstance(parsed, dict):
        fail("ARGS must be a JSON object")
    _query(home, contract, method, parsed, as_, url)


def _query(home: Path, contract: str, method: str, args: dict[str, Any], as_: str, url: str | None) -> None:
    console.print_json(json.dumps(_read(home, as_, url, lambda c: c.query(contract, method, args))))


@contextmanager
def _node_errors() -> Iterator[None]:
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


def _read(home: Path, as_: str, url: str | None, fn: Callable[[Any], Any]) -> Any:
    """``fn(client)`` with a client reading as member ``as_``; node errors end the command with exit 1."""
    from liangcao.client import Client

    h = _home(home)
    with _node_errors(), Client(url or h.url, h.auth().create(as_, 1)) as c:
        return fn(c)


# ---- one command per contract action (supply-chain finance) -----------------------------------------------
def _option_value(text: str, is_list: bool) -> Any:
    """A command-line value: JSON when it looks like JSON, a comma-separated list for list fields, else text."""
    if text[:1] in "[{":
        return _json_arg(text, f"the value {text[:40]!r}")
    if is_list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _action_command(contract: str, method: Any) -> Any:
    """A typer command for one contract method, with an option per argument field.

    Built from the contract's own argument type, so the CLI cannot drift from the contract; values are
    converted by msgspec (``"100"`` becomes 100 where the field is an integer) and checked before signing.
    """
    import inspect

    import msgspec

    fields = msgspec.structs.fields(method.args_type)
    params: list[inspect.Parameter] = [inspect.Parameter("home", inspect.Parameter.KEYWORD_ONLY, annotation=Home)]
    for f in fields:
        help_text = "list: a,b,c or JSON" if "list" in str(f.type) else "value (JSON for objects)"
        option = typer.Option(f"--{f.name.replace('_', '-')}", help=help_text)
        default = inspect.Parameter.empty if f.required else None
        annotation = Annotated[str, option] if f.required else Annotated[str | None, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    if method.kind == "transaction":
        signer_opt = typer.Option("--as", help="signing member, e.g. org2/alice (repeat for several)")
        params.append(
            inspect.Parameter(
                "as_", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[list[str], signer_opt], default=[]
            )
        )
    else:
        reader_opt = typer.Option("--as", help="member to read as")
        params.append(
            inspect.Parameter(
                "as_", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, reader_opt], default="org1/admin"
            )
        )
    url_opt = typer.Option(help="node URL (default from node.json)")
    params.append(
        inspect.Parameter(
            "url", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str | None, url_opt], default=None
        )
    )

    def command(**kw: Any) -> None:
        args = {f.name: _option_value(kw[f.name], "list" in str(f.type)) for f in fields if kw.get(f.name) is not None}
        try:
            typed = msgspec.convert(args, method.args_type, strict=False)
        except msgspec.ValidationError as exc:
            fail(f"invalid arguments for {contract}.{method.name}: {exc}")
        clean = msgspec.to_builtins(typed)
        if method.kind == "transaction":
            _submit(kw["home"], contract, method.name, clean, kw["as_"], kw["url"], True)
        else:
            _query(kw["home"], contract, method.name, clean, kw["as_"], kw["url"])

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = (
        (method.fn.__doc__ or f"{method.kind.capitalize()} {contract}.{method.name}.").strip().split("\n")[0]
    )
    return command


def _contract_apps() -> None:
    from liangcao.apps.bundle import default_registry

    registry = default_registry()
    scf_app = typer.Typer(help="Supply-chain finance: one command per contract action.", no_args_is_help=True)
    app.add_typer(scf_app, name="scf")
    for name in registry.names():
        if not name.startswith("scf."):
            continue
        contract = registry.get(name)
        assert contract is not None
        module_doc = sys.modules[type(contract).__module__].__doc__ or name
        sub = typer.Typer(help=module_doc.strip().split("\n")[0].replace("``", ""), no_args_is_help=True)
        scf_app.add_typer(sub, name=name.removeprefix("scf."))
        for method in sorted(contract.methods.values(), key=lambda m: m.name):
            if not method.internal:
                sub.command(method.name.replace("_", "-"))(_action_command(name, method))


_contract_apps()


# ---- traceability ------------------------------------------------------------------------------------------
trace_app = typer.Typer(help="GS1 EPCIS 2.0 traceability.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


def _epcis_document(file: Path) -> dict[str, Any]:
    """An EPCIS document from a JSON-LD or XML file (XML read as the JSON-LD it means)."""
    from liangcao.trace.depth import TooDeep, check_json
    from liangcao.trace.xml import XmlRefused, looks_like_xml, read

    try:
        data = file.read_bytes()
        if not looks_like_xml(data):
            check_json(data, "the document")  # before json.loads recurses into it
        document = read(data) if looks_like_xml(data) else json.loads(data.decode("utf-8"))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except (XmlRefused, TooDeep) as exc:
        fail(f"{file}: {exc}")
    except (ValueError, UnicodeDecodeError) as exc:
        fail(f"{file} is neither JSON nor XML: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("epcisBody"), dict):
        fail(f"{file} is not an EPCIS document: it has no epcisBody object")
    return document


@trace_app.command("validate")
def trace_validate_cmd(
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 document in JSON-LD or XML")],
) -> None:
    """Check a document against GS1's EPCIS 2.0 JSON schema; exit 1 listing each problem by event and field."""
    from liangcao.trace.validate import validate_document

    document = _epcis_document(file)
    try:
        problems = validate_document(document)
    except FileNotFoundError as exc:
        fail(str(exc))
    if problems:
        for p in problems:
            err.print(str(p), soft_wrap=True, markup=False)
        raise typer.Exit(1)
    console.print(f"valid: {len(document['epcisBody'].get('eventList') or [])} events")


@trace_app.command("hash")
def trace_hash_cmd(
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 document or query document in JSON-LD or XML")],
    prehash: Annotated[bool, typer.Option("--prehash", help="print the pre-hash strings too")] = False,
) -> None:
    """Print the CBV 2.0 event hash id of each event, one per line, in document order."""
    from liangcao.trace.hashing import Hasher, events_of, hash_of_prehash, ignored_fields

    document = _epcis_document(file)
    hasher = Hasher(document.get("@context"), ignored_fields(document))
    for n, event in enumerate(events_of(document)):
        if not isinstance(event, dict):
            fail(f"event {n} of {file} is not an object")
        pre = hasher.event(event)
        print(hash_of_prehash(pre))
        if prehash:
            print(pre)


@trace_app.command("capture")
def trace_capture_cmd(
    home: Home,
    file: Annotated[Path, typer.Argument(help="an EPCIS 2.0 capture document in JSON-LD or XML")],
    as_: Annotated[str, typer.Option("--as", help="the member who records the events, e.g. org2/alice")],
    url: Annotated[str | None, typer.Option(help="node URL (default from node.json)")] = None,
) -> None:
    """Validate, hash, sign (locally) and capture a document; print each event's id and status.

    Exit 1 if the document is invalid (each problem by event and field), 2 if the ledger refused events.
    """
    from liangcao.client import Client
    from liangcao.node.home import load_signer, member_dir
    from liangcao.trace.capture import CaptureRefused

    _member_id(as_)
    h = _home(home)
    try:
        signer = load_signer(member_dir(h.root, as_))
        data = file.read_bytes()
    except (FileNotFoundError, ValueError) as exc:
        fail(f"cannot load {exc}")
    try:
        with _node_errors(), Client(url or h.url, chain_id=h.chain_id()) as c:
            results = c.capture(data, signer)
    except CaptureRefused as exc:
        for p in exc.problems or []:
            err.print(str(p), soft_wrap=True, markup=False)
        fail(exc.message)
    for r in results:
        print(f"{r['id']} {r['status']}")


@trace_app.command("query")
def trace_query_cmd(
    home: Home,
    params: Annotated[list[str], typer.Argument(help="EPCIS query parameters as NAME=VALUE, e.g. MATCH_anyEPC=urn:…")],
    as_: Annotated[str, typer.Option("--as", help="member to read as")] = "org1/admin",
    url: Annotated[str | None, typer.Option(help="node URL (default from node.json)")] = None,
) -> None:
    """Query events (eventType, GE_eventTime, EQ_bizStep, MATCH_epc, perPage, …); print the query document."""
    pairs = {}
    for p in params:
        name, sep, value = p.partition("=")
        if not sep:
            fail(f"{p!r} is not NAME=VALUE")
        pairs[name] = value
    print(json.dumps(_read(home, as_, url, lambda c: c.epcis_query(**pairs)), indent=1))


@trace_app.command("history")
def trace_history_cmd(
    home: Home,
    identifier: Annotated[str, typer.Argument(help="an EPC URI or GS1 Digital Link URI")],
    as_: Annotated[str, typer.Option("--as", help="member to read as")] = "org1/admin",
    url: Annotated[str | None, typer.Option(help="node URL (default from node.json)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole provenance as JSON")] = False,
) -> None:
    """An item's history through packing and making: each event, who recorded it, in which block."""
    from rich.table import Table

    from liangcao.trace.query import iso

    p = _read(home, as_, url, lambda c: c.provenance(identifier))
    if as_json:
        print(json.dumps(p, indent=1))
        return
    table = Table(title=f"history of {identifier}")
    for col in ("event time", "type", "bizStep", "recorded by", "block", "via"):
        table.add_column(col)
    for e in p["events"]:
        path = e["via"][0]["path"] if e["via"] else []
        via = " > ".join(next(iter(v.values())) for v in path) or "itself"
        table.add_row(iso(e["time_ms"]), e["type"], str(e["event"].get("bizStep", "")), e["org"], str(e["height"]), via)
    console.print(table)


@trace_app.command("bench")
def trace_bench_cmd(
    events: Annotated[int, typer.Option(min=700, max=10_000_000, help="events to capture")] = 1_000_000,
    lookups: Annotated[int, typer.Option(min=10, max=100_000, help="history lookups by EPC")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object on the last line")] = False,
) -> None:
    """Bulk EPCIS capture into committed blocks, and history lookup latency by EPC, on a real node."""
    from liangcao.trace.bench import run_trace_bench

    run_trace_bench(events=events, lookups=lookups, as_json=as_json, console=console)


# ---- audit and proofs -------------------------------------------------------------------------------------
@app.command("audit")
def audit_cmd(
    home: Annotated[Path | None, typer.Option("--home", help="network folder (pins the genesis and the peer)")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="or a ledger database file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    node_dir: Annotated[
        str, typer.Option("--node", help="the node folder in the network folder, e.g. nodes/org2")
    ] = "node",
    genesis_hash: Annotated[
        str | None, typer.Option("--genesis-hash", help="the chain's genesis block hash, from outside this disk")
    ] = None,
    expect_head: Annotated[
        str | None, typer.Option("--expect-head", help="HEIGHT[:BLOCK_HASH] the store must hold (recorded elsewhere)")
    ] = None,
    peer: Annotated[
        str | None, typer.Option("--peer", help="this node's peer, e.g. org2/peer0 (default: the home's)")
    ] = None,
    attestations: Annotated[
        Path | None, typer.Option("--attestations", help="a JSON file of attestations held outside this store")
    ] = None,
    nats: Annotated[
        str | None,
        typer.Option("--nats", help="read the chain's attestation stream from these NATS URLs (comma-separated)"),
    ] = None,
) -> None:
    """Re-verify a ledger from genesis. Exit 1 and name each place if anything was altered.

    The genesis is pinned from --home's genesis.json (and/or --genesis-hash). A store rolled back
    consistently is found only with evidence from elsewhere: --expect-head, or the network's attestations
    (--nats, --attestations) of this node's peer above the store's head."""
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime
    from liangcao.ledger.audit import audit

    h = _home(home, node_dir) if home is not None else None
    if db is None:
        if h is None:
            fail("give --home DIR or --db FILE")
        db = h.store_path
    pin = genesis_hash.strip().lower() if genesis_hash else None
    if h is not None:
        pin = _home_genesis_pin(h, pin)
        peer = peer or _home_peer(h)
    head = _expected_head(expect_head) if expect_head else None
    evidence: list[Any] = _attestations_file(attestations) if attestations else []
    if nats:
        chain_id = h.chain_id() if h is not None else _store_chain_id(db)
        evidence += _network_attestations([u.strip() for u in nats.split(",") if u.strip()], chain_id)
    with Progress(
        TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("blocks", total=None)
        report = audit(
            db,
            lambda: ContractRuntime(default_registry()),
            lambda done, total: bar.update(task, completed=done, total=total),
            genesis_hash=pin,
            expect_head=head,
            peer=peer,
            evidence=evidence,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "blocks": report.blocks,
                    "txs": report.txs,
                    "head": report.head,
                    "genesis_hash": report.genesis_hash,
                    "genesis_pinned": report.genesis_pinned,
                    "notes": report.notes,
                    "findings": [{"table": f.table, "place": f.place, "message": f.message} for f in report.findings],
                }
            )
        )
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}")
    if not report.genesis_pinned:
        err.print(
            f"[yellow]note:[/] genesis not pinned (give --home or --genesis-hash): this store's genesis is "
            f"{report.genesis_hash or 'missing'}; compare it with the consortium's"
        )
    if report.ok:
        console.print(
            f"[green]audit passed[/]: {report.blocks} blocks, {report.txs} transactions, every hash, signature and state hash verified"
        )
        return
    for f in report.findings[:50]:
        err.print(f"[red]ALTERED[/] {f}")
    if len(report.findings) > 50:
        err.print(f"... and {len(report.findings) - 50} more findings")
    raise typer.Exit(1)


def _home_genesis_pin(h: Any, given: str | None) -> str:
    """The genesis hash a network folder pins (genesis.json, which consortium.json must agree with)."""
    try:
        pinned = str(h.genesis().hash)
        listed = json.loads((h.root / "consortium.json").read_text()).get("genesis_hash")
    except (OSError, ValueError, LiangcaoError) as exc:
        fail(f"cannot read the network folder's genesis: {exc}")
    if listed is not None and listed != pinned:
        fail(f"{h.root}: genesis.json hashes to {pinned}, consortium.json says {listed}")
    if given is not None and given != pinned:
        fail(f"--genesis-hash {given} is not the network folder's genesis {pinned}")
    return pinned


def _home_peer(h: Any) -> str | None:
    from liangcao.crypto import identity

    try:
        pem = (h.root / str(h.config["peer"]) / "cert.pem").read_bytes()
        return identity.parse_certificate(identity.pem_to_der(pem)).member_id
    except (OSError, KeyError, ValueError):
        return None


def _expected_head(text: str) -> tuple[int, str | None]:
    height, _, block_hash = text.partition(":")
    try:
        n = int(height)
        if n < 0 or (block_hash and (len(block_hash) != 64 or block_hash.strip("0123456789abcdefABCDEF"))):
            raise ValueError(text)
    except ValueError:
        fail("--expect-head is HEIGHT or HEIGHT:BLOCK_HASH (64 hex digits)")
    return n, block_hash.lower() or None


def _attestations_file(path: Path) -> list[Any]:
    """Every attestation object in a JSON file: a list of them, /v1/attestations/{h} or /v1/blocks/{h}
    answers, or lists of those."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    out: list[Any] = []
    todo = [data]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict) and "sig" in item and "block_hash" in item:
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("attestations"), list):
            todo.extend(item["attestations"])
    return out


def _store_chain_id(db: Path) -> str:
    import sqlite3

    from liangcao.ledger.block import Header

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return Header.from_bytes(
                bytes(con.execute("SELECT header FROM blocks WHERE height=0").fetchone()[0])
            ).chain_id
        finally:
            con.close()
    except (sqlite3.Error, TypeError, LiangcaoError) as exc:
        fail(f"cannot read the chain id of {db}: {exc}")


def _network_attestations(urls: list[str], chain_id: str, timeout_s: float = 30) -> list[bytes]:
    """Every attestation in the chain's JetStream attestation stream: what the network holds."""
    import asyncio

    from liangcao.node.link import att_stream, att_subject

    async def read() -> list[bytes]:
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=2)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(att_stream(chain_id))).state.last_seq
            out: list[bytes] = []
            done = asyncio.Event()

            async def on(msg: Any) -> None:
                out.append(msg.data)
                if msg.metadata.sequence.stream >= last:
                    done.set()

            if last:
                sub = await js.subscribe(
                    att_subject(chain_id),
                    stream=att_stream(chain_id),
                    cb=on,
                    ordered_consumer=True,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                )
                await asyncio.wait_for(done.wait(), timeout_s)
                await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    try:
        return asyncio.run(read())
    except Exception as exc:  # no server, no stream, a timeout: the audit cannot use the network
        fail(f"cannot read the attestation stream of {chain_id} from {', '.join(urls)}: {exc!r}")


@app.command("verify-proof")
def verify_proof_cmd(
    file: Annotated[Path, typer.Argument(help="a proof JSON file, or an item's /v1/trace/verify bundle")],
    anchors: Annotated[
        str | None,
        typer.Option(
            help="bundles: trust the organisations whose CA certificate's SHA-256 fingerprint starts with one of "
            "these (comma-separated, 32+ hex digits: the QR code's anchors=)"
        ),
    ] = None,
    genesis: Annotated[
        Path | None,
        typer.Option(help="bundles: trust every organisation of this genesis.json (the consortium's, got out of band)"),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(help="bundles: distinct trusted organisations that must attest each block (default: a majority)"),
    ] = None,
    item: Annotated[
        str | None, typer.Option(help="bundles: the item you asked about (default: the bundle's id)")
    ] = None,
) -> None:
    """Check a Merkle inclusion proof, or a whole traceability bundle, offline. Exit 1 if it does not verify.

    A bundle gets the checks the consumer page makes (liangcao.trace.bundle_check): header hashes,
    transaction and receipt inclusion, the capture's signatures by members of trusted organisations (who
    recorded each event comes from their certificates), the anchored event hashing to its id and concerning
    the item, and attestations by at least a quorum of trusted organisations. Trust is never taken from the
    bundle: give --anchors (from the QR code) or --genesis.
    """
    from liangcao.ledger.block import verify_proof_dict
    from liangcao.trace.depth import check_json

    try:
        text = file.read_text()
        check_json(text, "the file")  # a bundle from anywhere: refused before json.loads recurses into it
        proof = json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {file}: {exc}")
    if isinstance(proof, dict) and "events" in proof and "organisations" in proof:
        from liangcao.trace.bundle_check import Trust, TrustError, check_bundle

        try:
            if genesis is not None:
                trust: Trust | None = Trust.from_genesis(json.loads(genesis.read_text()), quorum)
            elif anchors:
                trust = Trust.from_anchors(anchors.split(","), quorum)
            else:
                trust = None
        except (OSError, ValueError) as exc:  # TrustError is a ValueError
            fail(
                f"cannot use the trust anchors: {exc}"
                if isinstance(exc, TrustError)
                else f"cannot read {genesis}: {exc}"
            )
        result = check_bundle(proof, trust, item)
        if result.trusted:
            console.print(f"trusted organisations: {', '.join(result.trusted)}; quorum {result.quorum}", soft_wrap=True)
        for e in result.events:
            mark = "[green]ok[/]" if not e.problems else "[red]NOT verified[/]"
            who = f"recorded by {e.recorded_by}" if e.recorded_by else "recorder not proven"
            console.print(
                f"{mark} {e.id} {who}, block {e.height}, attested by {', '.join(e.orgs) or 'nobody trusted'}",
                soft_wrap=True,
            )
            for problem in e.problems:
                console.print(f"    {problem}", soft_wrap=True)
        for problem in result.problems:
            console.print(f"[red]NOT verified[/]: {problem}", soft_wrap=True)
        if not result.verified:
            fail(f"the history of {result.item} is NOT verified" + ("" if result.events else ": it has no events"))
        console.print(f"[green]verified[/]: {len(result.events)} events of {result.item}")
        return
    if isinstance(proof, dict) and "tx_proof" in proof:
        proof = proof["tx_proof"]
    if not isinstance(proof, dict):
        fail("the file does not hold a proof object")
    ok, why = verify_proof_dict(proof)
    if not ok:
        fail(f"proof does NOT verify: {why}")
    header = proof["header"]
    console.print(
        f"[green]proof verifies[/]: the {proof['kind']} is at index {proof['index']} of block {header['height']} ({proof['block_hash'][:16]}…) of chain {header['chain_id']}"
    )


# ---- demo and bench ---------------------------------------------------------------------------------------
@app.command("demo")
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


@app.command("bench")
def bench_cmd(
    txs: Annotated[int, typer.Option(min=100, max=1_000_000, help="transactions in the throughput phase")] = 30_000,
    clients: Annotated[int, typer.Option(min=1, max=16, help="concurrent HTTP submitters")] = 2,
    batch: Annotated[int, typer.Option(min=1, max=2000, help="transactions per HTTP batch")] = 500,
    latency_s: Annotated[float, typer.Option(min=1, max=120, help="length of the latency phase")] = 8.0,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object on the last line")] = False,
    network_home: Annotated[
        Path | None,
        typer.Option("--network", help="a consortium started with 'network up': measure finality across its orgs"),
    ] = None,
) -> None:
    """Throughput and commit latency of a real node over HTTP, next to this machine's signature rate.

    With --network DIR: transactions finalised by every organisation per second, and time to finality."""
    if network_home is not None:
        from liangcao.node.network_bench import run_network_bench

        try:
            result = run_network_bench(network_home, txs=txs, batch=batch, latency_s=latency_s, console=console)
        except (FileNotFoundError, RuntimeError) as exc:
            fail(str(exc))
        if as_json:
            print(json.dumps(result))
        return
    from liangcao.bench import run_bench

    run_bench(txs=txs, clients=clients, batch=batch, latency_s=latency_s, as_json=as_json, console=console)


def main() -> None:
    from liangcao.errors import Fault

    try:
        app()
    except Fault as exc:  # this machine failed (the store, the disk): one clear line, not a traceback
        err.print(f"[red]error:[/] {exc.message}")
        raise SystemExit(1) from None


# ---- dangerous-goods declarations (shipping) ----------------------------------------------------------------
dg_app = typer.Typer(
    help="Dangerous-goods declarations, sealed for the shipper, carrier and terminals.", no_args_is_help=True
)
app.add_typer(dg_app, name="dg")
As = Annotated[str, typer.Option("--as", help="the member acting, e.g. org1/alice")]
Url = Annotated[str | None, typer.Option(help="node URL (default from node.json)")]


def dg_key_path(home: Path, org: str) -> Path:
    """Where an organisation keeps its X25519 private key for declarations in a network folder."""
    from liangcao.node.home import valid_member_id

    if not valid_member_id(f"{org}/x"):
        raise ValueError(f"{org!r} is not an organisation id (letters, digits, '_' or '-': no path)")
    return home / "orgs" / org / "dg" / "x25519.pem"


def _dg(home: Path, as_: str, url: str | None, fn: Callable[[Any], Any]) -> Any:
    """``fn(desk)`` for member ``as_`` with its organisation's key; refusals end the command with exit 2."""
    from liangcao.client import Client
    from liangcao.node.home import load_signer, member_dir
    from liangcao.shipping import declaration as dg
    from liangcao.shipping.sdk import Declarations

    _member_id(as_)
    h = _home(home)
    org = as_.partition("/")[0]
    try:
        signer = load_signer(member_dir(h.root, as_))
        path = dg_key_path(h.root, org)
        key = dg.load_private(path.read_bytes()) if path.exists() else None
    except (OSError, ValueError) as exc:
        fail(f"cannot load the keys of {as_}: {exc}")
    try:
        with _node_errors(), Client(url or h.url, h.auth().create(as_, 1)) as c:
            return fn(Declarations(c, signer, key))
    except dg.DeclarationError as exc:
        fail(str(exc))


@dg_app.command("keygen")
def dg_keygen_cmd(
    home: Home, as_: Annotated[str, typer.Option("--as", help="an admin, e.g. org3/admin")], url: Url = None
) -> None:
    """Make the organisation's X25519 key (kept 0600 in the network folder) and register it on the ledger."""
    from liangcao.crypto import keys
    from liangcao.node.home import member_dir
    from liangcao.shipping import declaration as dg

    _member_id(as_)  # before any path is made from it: nothing is written for a bad name
    root = _home(home).root
    if not (member_dir(root, as_) / "key.pem").exists():
        fail(f"{as_} is not a member of this network folder (no {member_dir(root, as_).relative_to(root)})")
    path = dg_key_path(root, as_.partition("/")[0])
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(keys.private_pem(dg.new_key()))
    entry = _dg(home, as_, url, lambda d: d.register_key())
    print(f"{entry['org']} key {entry['fp']} registered at height {entry['height']}")


@dg_app.command("submit")
def dg_submit_cmd(
    home: Home,
    decl_id: Annotated[
        str, typer.Argument(help="a name such as DG-2026-0001: the declaration is then yours/DG-2026-0001")
    ],
    file: Annotated[Path, typer.Argument(help="the declaration's content as JSON (see docs/dangerous-goods.md)")],
    carrier: Annotated[str, typer.Option(help="the carrier organisation")],
    as_: As,
    terminal: Annotated[
        list[str] | None, typer.Option(help="a terminal that reads it once approved (repeatable)")
    ] = None,
    url: Url = None,
) -> None:
    """Seal a declaration for your organisation and the carrier, and submit it."""
    content = _json_arg(_read_text(file), str(file))
    r = _dg(home, as_, url, lambda d: d.submit(decl_id, content, carrier=carrier, terminals=terminal or []))
    print(json.dumps(r))


@dg_app.command("amend")
def dg_amend_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    file: Annotated[Path, typer.Argument(help="the amended content as JSON")],
    as_: As,
    terminal: Annotated[list[str] | None, typer.Option(help="replace the terminals (repeatable)")] = None,
    url: Url = None,
) -> None:
    """Submit a new version of a declaration, linked to the latest one."""
    content = _json_arg(_read_text(file), str(file))
    print(json.dumps(_dg(home, as_, url, lambda d: d.amend(decl_id, content, terminals=terminal))))


@dg_app.command("approve")
def dg_approve_cmd(
    home: Home, decl_id: Annotated[str, typer.Argument()], version: int, as_: As, url: Url = None
) -> None:
    """As the carrier: open the version, check it, and let its terminals read it."""
    print(json.dumps(_dg(home, as_, url, lambda d: d.approve(decl_id, version))))


@dg_app.command("reject")
def dg_reject_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    version: int,
    reason: Annotated[str, typer.Option(help="why, for the shipper (sealed: only shipper and carrier read it)")],
    as_: As,
    url: Url = None,
) -> None:
    """As the carrier: refuse the version, saying why."""
    print(json.dumps(_dg(home, as_, url, lambda d: d.reject(decl_id, version, reason))))


@dg_app.command("show")
def dg_show_cmd(
    home: Home,
    decl_id: Annotated[str, typer.Argument()],
    as_: As,
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

    print(json.dumps(_dg(home, as_, url, show), ensure_ascii=False, indent=1))


@dg_app.command("versions")
def dg_versions_cmd(home: Home, decl_id: Annotated[str, typer.Argument()], as_: As, url: Url = None) -> None:
    """A declaration's versions, oldest first (no content)."""
    for v in _dg(home, as_, url, lambda d: d.versions(decl_id)):
        print(f"v{v['version']} prev={v['prev'] or '-'} {v['status']} terminals={','.join(v['terminals']) or '-'}")


if __name__ == "__main__":
    main()
