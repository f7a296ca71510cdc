"""The contract runtime: typed arguments and records, floats refused, limits, nested calls, queries read-only,
the party check, internal methods and indexes. Run on ``liangcao.testing``, the harness outside authors use."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from liangcao import encoding, limits
from liangcao.apps.wallet import Wallet
from liangcao.codes import Code
from liangcao.contracts import Args, Context, Contract, Index, NoArgs, Record, internal, query, transaction
from liangcao.contracts.index import Cursor
from liangcao.domain import OrgId
from liangcao.node.genesis import make_genesis
from liangcao.testing import Chain


class PutArgs(Args):
    key: str
    value: Any


class CountArgs(Args):
    n: int


class PartyArgs(Args):
    party: str = ""
    role: list[str] | None = None
    org_type: list[str] | None = None


class Note(Record):
    """A record with an optional field that is sometimes absent from the stored bytes."""

    title: str
    by: str
    pinned: bool | msgspec.UnsetType = msgspec.UNSET


class NoteArgs(Args):
    key: str
    title: str
    pinned: bool | None = None


class EntryArgs(Args):
    group: str
    item: str
    value: int = 1


class PageArgs(Args):
    group: str = ""
    after: Cursor = ""
    limit: int = 2


TAGS = Index("tag")


class Toy(Contract):
    name = "toy"

    @transaction
    def put(self, ctx: Context, args: PutArgs) -> None:
        ctx.put(args.key, args.value)

    @transaction
    def put_float(self, ctx: Context, args: NoArgs) -> None:
        ctx.put("f", {"price": 9.99})

    @transaction
    def many_writes(self, ctx: Context, args: CountArgs) -> None:
        for i in range(args.n):
            ctx.put(f"k{i}", i)

    @transaction
    def many_events(self, ctx: Context, args: CountArgs) -> None:
        for i in range(args.n):
            ctx.emit("e", {"i": i})

    @transaction
    def boom(self, ctx: Context, args: NoArgs) -> None:
        ctx.put("half", 1)
        raise KeyError("bug")

    @transaction
    def pay_then_fail(self, ctx: Context, args: NoArgs) -> None:
        ctx.invoke("demo.wallet", "transfer", {"to": "org2/bob", "amount": 1})
        ctx.fail(1999, "changed my mind")

    @transaction
    def pay(self, ctx: Context, args: NoArgs) -> Any:
        return ctx.invoke("demo.wallet", "transfer", {"to": "org2/bob", "amount": 1})

    @transaction
    def recurse(self, ctx: Context, args: NoArgs) -> None:
        ctx.invoke("toy", "recurse", {})

    @query
    def sneaky(self, ctx: Context, args: NoArgs) -> None:
        ctx.put("x", 1)

    @query
    def listing(self, ctx: Context, args: NoArgs) -> list[Any]:
        return [[k, v] for k, v in ctx.range("")]

    # ---- parties
    @transaction
    def who(self, ctx: Context, args: PartyArgs) -> str:
        return ctx.require_party(args.party, role=args.role, org_type=args.org_type).member_id

    # ---- records
    @transaction
    def note(self, ctx: Context, args: NoteArgs) -> Note:
        old = ctx.load(Note, args.key)
        pinned: bool | msgspec.UnsetType = msgspec.UNSET if args.pinned is None else args.pinned
        note = Note(title=args.title, by=ctx.signer().member_id, pinned=pinned) if old is None else old
        ctx.save(args.key, note.replace(title=args.title))
        return note

    @query
    def notes(self, ctx: Context, args: NoArgs) -> list[Note]:
        return [n for _, n in ctx.range("n/", Note)]

    @query
    def missing_note(self, ctx: Context, args: NoArgs) -> Note:
        return ctx.must_load(Note, "n/none", "no such note")

    # ---- internal methods
    @internal(callers=("caller",))
    @transaction
    def only_caller(self, ctx: Context, args: NoArgs) -> str:
        return ctx.caller

    @internal
    @transaction
    def any_contract(self, ctx: Context, args: NoArgs) -> str:
        return ctx.caller

    @transaction
    def call(self, ctx: Context, args: PutArgs) -> Any:
        return ctx.invoke("toy", args.key, {})

    # ---- indexes
    @transaction
    def tag(self, ctx: Context, args: EntryArgs) -> None:
        TAGS.add(ctx, args.group, args.item, value=args.value)

    @transaction
    def untag(self, ctx: Context, args: EntryArgs) -> None:
        TAGS.remove(ctx, args.group, args.item)

    @query
    def tags(self, ctx: Context, args: PageArgs) -> dict[str, Any]:
        group = (args.group,) if args.group else ()
        entries, cursor = TAGS.page(ctx, *group, after=args.after, limit=args.limit)
        return {"entries": [[k, v] for k, v in entries], "next": cursor}


class Caller(Contract):
    name = "caller"

    @transaction
    def call(self, ctx: Context, args: PutArgs) -> Any:
        return ctx.invoke("toy", args.key, {})


@pytest.fixture
def toy() -> Chain:
    # 3 organisations: org1 core enterprise, org2 supplier, org3 bank; only the wallet of the built-ins
    chain = Chain(["core_enterprise", "supplier", "bank"], contracts=[Toy(), Caller(), Wallet()], builtins=False)
    return chain


def run(chain: Chain, method: str, args: dict[str, Any] | None = None, who: str = "org1/alice") -> dict[str, Any]:
    return chain.run("toy", method, args or {}, who)


def test_put_and_range_in_own_namespace(toy: Chain) -> None:
    assert run(toy, "put", {"key": "b", "value": {"n": 1}})["code"] == Code.OK
    assert run(toy, "put", {"key": "a", "value": [1, "x"]})["code"] == Code.OK
    assert toy.state.data["toy/a"] == b'[1,"x"]'
    assert toy.query("toy", "listing", {}) == [["a", [1, "x"]], ["b", {"n": 1}]]


def test_floats_are_refused(toy: Chain) -> None:
    assert run(toy, "put_float")["code"] == Code.FLOAT_NOT_ALLOWED
    assert "toy/f" not in toy.state.data


@pytest.mark.parametrize(
    ("method", "args", "code"),
    [
        ("many_writes", {"n": limits.writes_per_tx_max + 1}, Code.LIMIT_EXCEEDED),
        ("many_events", {"n": limits.events_per_tx_max + 1}, Code.LIMIT_EXCEEDED),
        ("put", {"key": "k" * limits.key_bytes_max, "value": 1}, Code.LIMIT_EXCEEDED),
        ("put", {"key": "big", "value": "x" * limits.value_bytes_max}, Code.LIMIT_EXCEEDED),
        ("put", {"key": "", "value": 1}, Code.BAD_KEY),
        ("put", {"key": "a\nb", "value": 1}, Code.BAD_KEY),
        ("boom", {}, Code.CONTRACT_ERROR),
        ("recurse", {}, Code.LIMIT_EXCEEDED),
    ],
)
def test_limits_and_bugs_change_nothing(toy: Chain, method: str, args: dict[str, Any], code: Code) -> None:
    before = dict(toy.state.data)
    r = run(toy, method, args)
    assert r["code"] == code, r
    assert toy.state.data == before


def test_nested_call_is_atomic_with_its_caller(toy: Chain) -> None:
    toy.ok("demo.wallet", "mint", {"to": "org1/alice", "amount": 10}, "org1/admin")
    assert run(toy, "pay_then_fail")["code"] == 1999
    assert toy.query("demo.wallet", "balance", {"member": "org2/bob"}) == {"balance": 0}
    r = run(toy, "pay")
    assert r["code"] == Code.OK and r["result"] == {"balance": 9}
    assert toy.query("demo.wallet", "balance", {"member": "org2/bob"}) == {"balance": 1}


def test_queries_cannot_write(toy: Chain) -> None:
    toy.query_fails(Code.FORBIDDEN, "toy", "sneaky")


def test_query_errors(toy: Chain) -> None:
    toy.query_fails(Code.UNKNOWN_METHOD, "toy", "nope")
    message = toy.query_fails(Code.INVALID_ARGUMENT, "demo.wallet", "balance", {"member": 5})
    assert "member" in message


def test_method_signature_is_checked_at_class_creation() -> None:
    with pytest.raises(TypeError):

        class Bad(Contract):
            name = "bad"

            @transaction
            def m(self, ctx: Context, args: dict) -> None:  # type: ignore[type-arg]
                pass


def test_genesis_cannot_be_replayed(toy: Chain) -> None:
    c = toy.consortium
    g = make_genesis(c.chain_id, "again", c.orgs, toy.time_ms + 5000, c.orgs[0].signer("orderer0"))
    assert toy.block(g.txs[0])[0].code == Code.MISSING_SIGNATURE


# ---- the party check -------------------------------------------------------------------------------------------
def test_require_party_names_an_organisation_a_member_a_role_or_a_type(toy: Chain) -> None:
    assert toy.ok("toy", "who", {"party": "org2"}, "org2/bob") == "org2/bob"
    assert toy.ok("toy", "who", {"party": "org2/bob"}, "org2/bob") == "org2/bob"
    assert toy.ok("toy", "who", {"role": ["admin"]}, "org1/alice", "org3/admin") == "org3/admin"
    assert toy.ok("toy", "who", {"org_type": ["bank"]}, "org1/alice", "org3/bob") == "org3/bob"
    r = toy.fails(Code.NOT_SIGNED, "toy", "who", {"party": "org2"}, "org1/alice")
    assert r.message == "needs the signature of an admin or member of org2"
    r = toy.fails(Code.NOT_SIGNED, "toy", "who", {"party": "org2/alice"}, "org2/bob")
    assert r.message == "needs the signature of org2/alice"
    r = toy.fails(Code.NOT_SIGNED, "toy", "who", {"party": "org2", "role": ["admin"]}, "org2/bob")
    assert r.message == "needs the signature of an admin of org2"
    r = toy.fails(Code.WRONG_ORG_TYPE, "toy", "who", {"org_type": ["bank", "insurer"]}, "org1/alice")
    assert r.message == "needs a signer from an organisation of type bank or insurer"
    r = toy.fails(Code.WRONG_ROLE, "toy", "who", {"role": ["admin"]}, "org1/alice")
    assert r.message == "needs a signer with role admin"


def test_a_node_certificate_is_never_a_party(toy: Chain) -> None:
    for node in ("org2/peer0", "org2/orderer0"):
        toy.fails(Code.NOT_SIGNED, "toy", "who", {"party": "org2"}, node)
        toy.fails(Code.NOT_SIGNED, "toy", "who", {"party": node}, node)
        toy.fails(Code.WRONG_ORG_TYPE, "toy", "who", {"org_type": ["supplier"]}, node)
        toy.fails(Code.WRONG_ROLE, "toy", "who", {}, node)
    # asking for a node role is a programming error in the contract: recorded, deterministic, changes nothing
    r = toy.fails(Code.CONTRACT_ERROR, "toy", "who", {"party": "org2", "role": ["peer"]}, "org2/peer0")
    assert r.message == "contract raised ValueError"


def test_the_acting_party_comes_first_whatever_the_signature_order(toy: Chain) -> None:
    both = ("org2/bob", "org2/alice")
    assert toy.ok("toy", "who", {"party": "org2"}, *both) == "org2/bob"  # the first signer acts by default
    assert toy.ok("toy", "who", {"party": "org2"}, *both, actor="org2/alice") == "org2/alice"
    tx = toy.tx("toy", "who", {"party": "org2"}, *both, actor="org2/bob")
    assert toy.block(tx)[0].result == "org2/bob"


# ---- records ---------------------------------------------------------------------------------------------------
def test_records_are_typed_canonical_and_leave_unset_fields_out(toy: Chain) -> None:
    first = toy.ok("toy", "note", {"key": "n/a", "title": "hello"}, "org1/alice")
    assert first == {"title": "hello", "by": "org1/alice"}  # pinned is absent, not null
    assert toy.state.data["toy/n/a"] == b'{"by":"org1/alice","title":"hello"}'  # keys sorted
    toy.ok("toy", "note", {"key": "n/b", "title": "pinned", "pinned": False}, "org2/bob")
    assert toy.state.data["toy/n/b"] == b'{"by":"org2/bob","pinned":false,"title":"pinned"}'
    toy.ok("toy", "note", {"key": "n/a", "title": "renamed"}, "org2/bob")  # replace keeps the rest
    assert toy.query("toy", "notes") == [
        {"title": "renamed", "by": "org1/alice"},
        {"title": "pinned", "by": "org2/bob", "pinned": False},
    ]
    assert toy.query_fails(Code.NOT_FOUND, "toy", "missing_note") == "no such note"


def test_records_are_immutable() -> None:
    note = Note(title="t", by="org1/alice")
    with pytest.raises(AttributeError):
        note.title = "changed"  # type: ignore[misc]
    assert note.replace(title="changed").title == "changed" and note.title == "t"


# ---- internal methods ------------------------------------------------------------------------------------------
def test_internal_methods_are_called_only_by_the_contracts_named(toy: Chain) -> None:
    r = toy.fails(Code.FORBIDDEN, "toy", "only_caller", {}, "org1")
    assert r.message == "toy.only_caller is internal: only other contracts invoke it"
    r = toy.fails(Code.FORBIDDEN, "toy", "call", {"key": "only_caller", "value": None}, "org1")
    assert r.message == "toy may be called only by caller"
    assert toy.ok("caller", "call", {"key": "only_caller", "value": None}, "org1") == "caller"
    # bare @internal: any contract, never a transaction
    toy.fails(Code.FORBIDDEN, "toy", "any_contract", {}, "org1")
    assert toy.ok("toy", "call", {"key": "any_contract", "value": None}, "org1") == "toy"
    assert Toy.methods["only_caller"].callers == ("caller",) and Toy.methods["any_contract"].callers == ()


# ---- indexes ---------------------------------------------------------------------------------------------------
def test_an_index_pages_each_group_and_the_whole(toy: Chain) -> None:
    for group, item in [("org2", "b"), ("org1", "z"), ("org2", "a"), ("org2", "c.1"), ("org3", "x")]:
        toy.ok("toy", "tag", {"group": group, "item": item}, "org1")
    first = toy.query("toy", "tags", {"group": "org2"})
    assert first == {"entries": [["a", 1], ["b", 1]], "next": "b"}
    assert toy.query("toy", "tags", {"group": "org2", "after": "b"}) == {"entries": [["c.1", 1]], "next": None}
    whole = toy.query("toy", "tags", {"limit": 10})
    assert [k for k, _ in whole["entries"]] == ["org1/z", "org2/a", "org2/b", "org2/c.1", "org3/x"]
    assert toy.query("toy", "tags", {"after": "org2/a", "limit": 2})["entries"] == [["org2/b", 1], ["org2/c.1", 1]]
    toy.ok("toy", "untag", {"group": "org2", "item": "a"}, "org1")
    assert toy.query("toy", "tags", {"group": "org2"})["entries"] == [["b", 1], ["c.1", 1]]
    assert toy.items("toy/tag/org1/") == {"toy/tag/org1/z": 1}
    # a key a page cannot resume after is refused (a space sorts before every index character)
    r = toy.fails(Code.BAD_KEY, "toy", "tag", {"group": "org2", "item": "a b"}, "org1")
    assert "a b" in r.message
    with pytest.raises(ValueError):
        Index("a/b")


# ---- the harness itself ----------------------------------------------------------------------------------------
def test_the_harness_is_deterministic_and_moves_time_as_told() -> None:
    a, b = Chain(2), Chain(2)
    for chain in (a, b):
        chain.ok("demo.wallet", "mint", {"to": "org2/alice", "amount": 5}, "org1")
    assert a.state_hash == b.state_hash and a.state.data == b.state.data
    start = a.time_ms
    a.advance(days=2, hours=1)
    assert a.time_ms == start + (49 * 3600) * 1000 and a.date(1) > b.date(1)
    with pytest.raises(ValueError):
        a.advance(ms=-1)
    random = Chain(2, seed=None)
    assert random.consortium.org("org1").ca_cert != a.consortium.org("org1").ca_cert
    with pytest.raises(AssertionError, match="INSUFFICIENT_FUNDS"):
        a.ok("demo.wallet", "transfer", {"to": "org1/bob", "amount": 9}, "org2/bob")
    with pytest.raises(AssertionError, match="expected WRONG_ROLE"):
        a.fails(Code.WRONG_ROLE, "demo.wallet", "transfer", {"to": "org1/bob", "amount": 1}, "org2/alice")
    r = a.run("demo.wallet", "transfer", {"to": "org1/bob", "amount": 2}, "org2/alice")
    assert r.ok and r.event("transferred") == {"from": "org2/alice", "to": "org1/bob", "amount": 2, "memo": ""}
    assert encoding.decode(encoding.canonical(dict(r))) == r  # a receipt holds the stored dict


def test_a_new_member_enrolled_in_the_harness_signs_like_any_other() -> None:
    chain = Chain(["bank", "supplier"])
    carol = chain.enroll("org2", "carol")
    chain.ok("demo.wallet", "mint", {"to": "org2/carol", "amount": 3}, "org1")
    chain.ok("demo.wallet", "transfer", {"to": "org1/alice", "amount": 1}, carol)
    assert chain.query("demo.wallet", "balance", {"member": "org2/carol"}) == {"balance": 2}


def test_the_vocabulary_is_one_definition() -> None:
    from liangcao.apps.scf.common import OrgArgs
    from liangcao.contracts import consortium
    from liangcao.crypto import identity
    from liangcao.domain import ORG_TYPES, ROLES

    assert identity.ORG_TYPES is ORG_TYPES and identity.ROLES is ROLES
    assert consortium.OrgArgs.__annotations__["org_id"] == "OrgId" == OrgArgs.__annotations__["org"]
    assert consortium.ORG_ID.pattern == msgspec.inspect.type_info(OrgId).pattern  # type: ignore[attr-defined]


def test_the_public_modules_export_what_they_define_and_nothing_imports_the_harness() -> None:
    import ast
    import inspect
    import pathlib

    import liangcao.contracts as contracts
    import liangcao.contracts.index as index
    import liangcao.domain as domain
    import liangcao.testing as testing

    for module in (testing, domain, index, contracts):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    for module in (testing, domain, index):
        defined = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__
        }
        assert defined <= set(module.__all__), (module.__name__, defined - set(module.__all__))
    src = pathlib.Path(testing.__file__).parent

    def imports_harness(path: pathlib.Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "liangcao.testing" for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and (
                node.module == "liangcao.testing"
                or (node.module == "liangcao" and any(a.name == "testing" for a in node.names))
            ):
                return True
        return False

    importers = [str(p.relative_to(src)) for p in src.rglob("*.py") if imports_harness(p)]
    assert importers == []  # the harness sits above everything, like a test
