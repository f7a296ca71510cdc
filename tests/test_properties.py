"""Properties: independent executions agree byte for byte; the wallet conserves money under any sequence."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import NOW_MS, Replica
from liangcao import encoding
from liangcao.codes import Code
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium

CONSORTIUM: Consortium = create_consortium(3, now_ms=NOW_MS)
MEMBERS = [(f"org{o}", m) for o in (1, 2, 3) for m in ("alice", "bob", "admin")]


def sign(contract: str, method: str, args: dict[str, Any], org: str, member: str, nonce: str) -> bytes:
    signer = CONSORTIUM.org(org).signer(member)
    return txm.build(
        CONSORTIUM.chain_id, contract, method, args, [signer], not_after=NOW_MS + 3_600_000, nonce=nonce
    ).raw


op = st.tuples(
    st.sampled_from(["mint", "transfer", "transfer", "garbage"]),
    st.sampled_from(MEMBERS),
    st.sampled_from(MEMBERS),
    st.integers(min_value=-5, max_value=5_000),
)


def build_blocks(ops: list[tuple[str, tuple[str, str], tuple[str, str], int]], cuts: list[int]) -> list[list[bytes]]:
    txs: list[bytes] = []
    for i, (kind, (org, member), (to_org, to_member), amount) in enumerate(ops):
        to = f"{to_org}/{to_member}"
        if kind == "mint":
            txs.append(sign("demo.wallet", "mint", {"to": to, "amount": amount}, org, "admin", f"n{i}"))
        elif kind == "transfer":
            txs.append(sign("demo.wallet", "transfer", {"to": to, "amount": amount}, org, member, f"n{i}"))
        else:
            txs.append(b'{"body":' + str(amount).encode())
    blocks, start = [], 0
    for c in sorted(set(cuts)):
        if start < c < len(txs):
            blocks.append(txs[start:c])
            start = c
    blocks.append(txs[start:])
    return blocks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=5))
def test_two_independent_executions_agree(ops: list[Any], cuts: list[int]) -> None:
    blocks = build_blocks(ops, cuts)
    a, b = Replica(CONSORTIUM), Replica(CONSORTIUM)
    for txs in blocks:
        ea, eb = a.apply(txs), b.apply(list(txs))
        assert ea.receipts == eb.receipts
        assert ea.state_hash == eb.state_hash
    assert a.state.data == b.state.data


class WalletMachine(RuleBasedStateMachine):
    """Random mints and transfers (allowed and not): supply always equals the sum of balances."""

    def __init__(self) -> None:
        super().__init__()
        self.replica = Replica(CONSORTIUM)
        self.n = 0
        self.model: dict[str, int] = {}

    def _run(self, raw: bytes) -> dict[str, Any]:
        self.n += 1
        before = dict(self.replica.state.data)
        ex = self.replica.apply([raw])
        receipt: dict[str, Any] = encoding.decode(ex.receipts[0])  # type: ignore[assignment]
        if receipt["code"] != Code.OK:
            assert self.replica.state.data == before  # a refusal changes nothing
        return receipt

    @rule(who=st.sampled_from(MEMBERS), to=st.sampled_from(MEMBERS), amount=st.integers(-10, 10_000))
    def mint(self, who: tuple[str, str], to: tuple[str, str], amount: int) -> None:
        dest = f"{to[0]}/{to[1]}"
        r = self._run(sign("demo.wallet", "mint", {"to": dest, "amount": amount}, who[0], who[1], f"m{self.n}"))
        ok = who[1] == "admin" and amount > 0
        assert (r["code"] == Code.OK) == ok, r
        if ok:
            self.model[dest] = self.model.get(dest, 0) + amount

    @rule(who=st.sampled_from(MEMBERS), to=st.sampled_from(MEMBERS), amount=st.integers(-10, 10_000))
    def transfer(self, who: tuple[str, str], to: tuple[str, str], amount: int) -> None:
        src, dest = f"{who[0]}/{who[1]}", f"{to[0]}/{to[1]}"
        r = self._run(sign("demo.wallet", "transfer", {"to": dest, "amount": amount}, who[0], who[1], f"t{self.n}"))
        ok = amount > 0 and src != dest and self.model.get(src, 0) >= amount
        assert (r["code"] == Code.OK) == ok, r
        if ok:
            self.model[src] -= amount
            self.model[dest] = self.model.get(dest, 0) + amount

    @invariant()
    def money_is_conserved(self) -> None:
        data = self.replica.state.data
        balances = {
            k.removeprefix("demo.wallet/balance/"): int(v)
            for k, v in data.items()
            if k.startswith("demo.wallet/balance/")
        }
        supply = int(data.get("demo.wallet/supply", b"0"))
        assert sum(balances.values()) == supply
        assert {k: v for k, v in balances.items()} == {k: v for k, v in self.model.items() if k in balances or v}
        assert all(v >= 0 for v in balances.values())


WalletMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)
TestWallet = WalletMachine.TestCase
