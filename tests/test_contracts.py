"""The contract runtime: typed arguments, floats refused, limits, nested calls, queries read-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Chain
from liangcao import limits
from liangcao.apps.wallet import Wallet
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, NoArgs, Registry, query, transaction
from liangcao.contracts.consortium import Consortium as ConsortiumContract
from liangcao.contracts.runtime import ContractRuntime
from liangcao.errors import ContractFailure
from liangcao.genesis import Consortium, make_genesis
from liangcao.ledger.chain import Ledger


class PutArgs(Args):
    key: str
    value: Any


class CountArgs(Args):
    n: int


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


def registry() -> Registry:
    return Registry([ConsortiumContract(), Wallet(), Toy()])


@pytest.fixture
def toy(tmp_path: Path, consortium: Consortium) -> Iterator[Chain]:
    ledger = Ledger.open(tmp_path / "toy.sqlite", ContractRuntime(registry()))
    ledger.apply(consortium.genesis)
    yield Chain(ledger, consortium)
    ledger.close()


def run(chain: Chain, method: str, args: dict[str, Any] | None = None, who: str = "alice") -> dict[str, Any]:
    return chain.run("toy", method, args or {}, chain.signer("org1", who))


def test_put_and_range_in_own_namespace(toy: Chain) -> None:
    assert run(toy, "put", {"key": "b", "value": {"n": 1}})["code"] == Code.OK
    assert run(toy, "put", {"key": "a", "value": [1, "x"]})["code"] == Code.OK
    assert toy.ledger.store.get("toy/a") == b'[1,"x"]'
    assert toy.ledger.query("toy", "listing", {}) == [["a", [1, "x"]], ["b", {"n": 1}]]


def test_floats_are_refused(toy: Chain) -> None:
    assert run(toy, "put_float")["code"] == Code.FLOAT_NOT_ALLOWED
    assert toy.ledger.store.get("toy/f") is None


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
    before = toy.state()
    r = run(toy, method, args)
    assert r["code"] == code, r
    assert toy.state() == before


def test_nested_call_is_atomic_with_its_caller(toy: Chain) -> None:
    toy.run("demo.wallet", "mint", {"to": "org1/alice", "amount": 10}, toy.signer("org1", "admin"))
    assert run(toy, "pay_then_fail")["code"] == 1999
    assert toy.ledger.query("demo.wallet", "balance", {"member": "org2/bob"}) == {"balance": 0}
    r = run(toy, "pay")
    assert r["code"] == Code.OK and r["result"] == {"balance": 9}
    assert toy.ledger.query("demo.wallet", "balance", {"member": "org2/bob"}) == {"balance": 1}


def test_queries_cannot_write(toy: Chain) -> None:
    with pytest.raises(ContractFailure) as info:
        toy.ledger.query("toy", "sneaky", {})
    assert info.value.code == Code.FORBIDDEN


def test_query_errors(toy: Chain) -> None:
    with pytest.raises(ContractFailure) as info:
        toy.ledger.query("toy", "nope", {})
    assert info.value.code == Code.UNKNOWN_METHOD
    with pytest.raises(ContractFailure) as info:
        toy.ledger.query("demo.wallet", "balance", {"member": 5})
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "member" in info.value.message


def test_method_signature_is_checked_at_class_creation() -> None:
    with pytest.raises(TypeError):

        class Bad(Contract):
            name = "bad"

            @transaction
            def m(self, ctx: Context, args: dict) -> None:  # type: ignore[type-arg]
                pass


def test_genesis_cannot_be_replayed(toy: Chain, consortium: Consortium) -> None:
    g = make_genesis(
        consortium.chain_id, "again", consortium.orgs, toy.time_ms + 5000, consortium.orgs[0].signer("orderer0")
    )
    assert toy.commit([g.txs[0]])[0]["code"] == Code.MISSING_SIGNATURE
