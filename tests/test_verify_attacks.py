"""Consumer verification refuses a fabricated history: every attack of the security review, performed
offline against ``liangcao.trace.bundle_check`` and ``liangcao verify-proof`` (the page runs the same ones
in ``test_verify_page.py``).

The network is one embedded node (org1's) whose blocks the other organisations' peers re-executed and
attested (``liangcao.witness``), so honest histories reach the finality quorum; each attack is a bundle a
dishonest node could serve, valid in every respect but one (``verify_forge``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from conftest import Live
from liangcao.api.verify import trust_params
from liangcao.cli import app
from liangcao.client import Client
from liangcao.crypto import keys
from liangcao.ledger import block as blk
from liangcao.trace.bundle_check import ANCHOR_HEX_MIN, Trust, TrustError, Why, check_bundle
from liangcao.witness import witness
from trace_ledger import BRAND_PREFIX, document, obj
from verify_forge import Attack, Forge, attacks

TYPES = ["brand", "logistics", "customs"]
TIN = "urn:epc:id:sgtin:0614141.107346.11"
OTHER = "urn:epc:id:sgtin:0614141.107346.12"
LATE = "urn:epc:id:sgtin:0614141.107346.13"
CASE = "urn:epc:id:sscc:0614141.1234567880"
ATTACKS = [
    "invented-block-one-attestation",
    "fabricated-header",
    "self-signed-attestations",
    "non-member-attestation",
    "member-non-peer-attestation",
    "fewer-than-quorum",
    "unsigned-capture",
    "forged-capture-signature",
    "capture-by-outsider",
    "capture-by-peer-key",
    "recorded-by-lie",
    "unrelated-event",
    "case-event-before-packing",
]


@dataclass
class Net:
    live: Live
    honest: dict[str, Any]
    trust: Trust
    params: dict[str, str]
    attacks: dict[str, Attack]

    def bundle(self, item: str) -> dict[str, Any]:
        r = httpx.get(f"{self.live.url}/v1/trace/verify", params={"id": item})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def witness(self) -> dict[str, int]:
        peers = [self.live.signer("org2/peer0"), self.live.signer("org3/peer0")]
        with Client(self.live.url, self.live.token) as c:
            return witness(c, self.live.home.genesis(), peers, self.live.home.root)


def history(live: Live) -> None:
    admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
    with Client(live.url, live.token) as c:
        assert c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": "org1"}, admins)["code"] == 0
        brand = document(
            [
                obj([CASE], "staging_outbound", "2026-10-01T07:00:00+08:00"),  # before the tin is packed
                obj([TIN], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD"),
                {"type": "AggregationEvent", "eventTime": "2026-10-01T09:00:00+08:00", "eventTimeZoneOffset": "+08:00",
                 "parentID": CASE, "childEPCs": [TIN], "action": "ADD", "bizStep": "packing"},
                obj([OTHER], "commissioning", "2026-10-01T08:30:00+08:00", action="ADD"),
            ]
        )  # fmt: skip
        c.capture(brand, live.signer("org1/alice"))
        c.capture(document([obj([CASE], "shipping", "2026-10-02T08:00:00+08:00")]), live.signer("org2/alice"))
        inspect = obj([CASE], "inspecting", "2026-10-03T08:00:00+08:00", disposition="in_progress")
        c.capture(document([inspect]), live.signer("org3/alice"))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    live = Live(tmp_path_factory.mktemp("attacks") / "net", TYPES)
    try:
        history(live)
        params = trust_params(live.node.reader())
        trust = Trust.from_anchors(params["anchors"].split(","), int(params["quorum"]))
        n = Net(live, {}, trust, params, {})
        assert set(n.witness()) == {"org2/peer0", "org3/peer0"}
        n.honest = n.bundle(TIN)
        case = n.bundle(CASE)
        early = next(e for e in case["events"] if e["event"]["bizStep"] == "staging_outbound")
        forge = Forge(live.home.root, live.node.chain_id)
        n.attacks = attacks(n.honest, n.bundle(OTHER)["events"][0], early, forge)
        assert sorted(n.attacks) == sorted(ATTACKS)
        yield n
    finally:
        live.stop()


def verify_proof(tmp_path: Path, bundle: dict[str, Any], *args: str) -> tuple[int, str]:
    """``liangcao verify-proof`` on a bundle saved to a file (the real command, in this process)."""
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    r = CliRunner().invoke(app, ["verify-proof", str(path), *args], env={"COLUMNS": "300"})
    return r.exit_code, r.output


def test_an_honest_history_attested_by_a_quorum_verifies(net: Net, tmp_path: Path) -> None:
    result = check_bundle(net.honest, net.trust, TIN)
    assert result.verified, [(e.id, e.problems) for e in result.events]
    assert result.quorum == 2 and result.trusted == ["org1", "org2", "org3"]
    # who recorded each event comes from the signers' certificates
    assert [(e.org, e.recorded_by) for e in result.events] == [
        ("org1", "org1/alice"), ("org1", "org1/alice"), ("org2", "org2/alice"), ("org3", "org3/alice")
    ]  # fmt: skip
    assert all(e.orgs == ["org1", "org2", "org3"] for e in result.events)
    code, out = verify_proof(tmp_path, net.honest, "--anchors", net.params["anchors"], "--quorum", "2")
    assert code == 0 and "verified: 4 events" in out and "recorded by org2/alice" in out, out
    # the consortium's genesis block, got out of band, is a trust anchor too (its orgs and finality policy)
    genesis = str(net.live.home.root / "genesis.json")
    code, out = verify_proof(tmp_path, net.honest, "--genesis", genesis, "--item", TIN)
    assert code == 0 and "quorum 2" in out, out


def test_nothing_verifies_without_trust_anchors(net: Net, tmp_path: Path) -> None:
    """The bundle's own list of organisations is never a trust anchor."""
    result = check_bundle(net.honest, None)
    assert not result.verified and result.problems == [Why.NO_ANCHORS]
    code, out = verify_proof(tmp_path, net.honest)
    assert code == 1 and Why.NO_ANCHORS in out
    short = net.params["anchors"].split(",")[0][: ANCHOR_HEX_MIN - 1]
    with pytest.raises(TrustError, match="hex digits"):
        Trust.from_anchors([short])
    code, out = verify_proof(tmp_path, net.honest, "--anchors", short)
    assert code == 1 and "cannot use the trust anchors" in out
    # anchors naming one organisation cannot vouch for the others' attestations: org1 alone is not a quorum
    one = Trust.from_anchors(net.params["anchors"].split(",")[:1])
    result = check_bundle(net.honest, one)
    assert not result.verified and result.trusted == ["org1"]
    code, out = verify_proof(tmp_path, net.honest, "--anchors", net.params["anchors"], "--quorum", "4")
    assert code == 1 and "the quorum must be 1 to 3" in out


@pytest.mark.parametrize("name", ATTACKS)
def test_an_attack_is_refused_offline(net: Net, tmp_path: Path, name: str) -> None:
    attack = net.attacks[name]
    result = check_bundle(attack.bundle, net.trust, TIN)
    assert not result.verified
    # refused for exactly that reason, and nothing else in the bundle is wrong: each check stands alone
    problems = [(i, e.problems) for i, e in enumerate(result.events) if e.problems]
    assert len(problems) == 1 and problems[0][0] == attack.index, problems
    assert len(problems[0][1]) == 1 and problems[0][1][0].startswith(attack.why), problems
    if name == "recorded-by-lie":  # the recorder shown is the certificate's, whatever the server says
        assert result.events[attack.index].org == "org2"
    code, out = verify_proof(tmp_path, attack.bundle, "--anchors", net.params["anchors"], "--item", TIN)
    assert code == 1 and attack.why in out and "NOT verified" in out, out


def test_the_server_cannot_lower_the_quorum_or_pick_the_item(net: Net) -> None:
    lowered = json.loads(json.dumps(net.attacks["fewer-than-quorum"].bundle))
    assert lowered["finality_quorum"] == 1
    assert not check_bundle(lowered, net.trust, TIN).verified
    # the bundle of another item is not this item's history, whatever its "id" says
    other = net.bundle(OTHER)
    other["id"] = TIN
    result = check_bundle(other, net.trust, TIN)
    assert not result.verified and result.events[0].problems == [Why.UNRELATED]


def test_one_organisations_node_alone_never_makes_a_history_verified(net: Net) -> None:
    """An honest embedded node's new block, attested by its own peer only, is not final, so not verified;
    once the other organisations' peers re-executed and attested it, it is."""
    with Client(net.live.url, net.live.token) as c:
        c.capture(document([obj([LATE], "commissioning", "2026-10-04T08:00:00+08:00", action="ADD")]), net.live.signer("org1/alice"))  # fmt: skip
    result = check_bundle(net.bundle(LATE), net.trust, LATE)
    assert not result.verified and result.events[0].problems == [f"{Why.QUORUM} (1 of 2 needed)"]
    assert net.witness() == {"org2/peer0": 1, "org3/peer0": 1}
    assert check_bundle(net.bundle(LATE), net.trust, LATE).verified


def test_the_node_serves_only_attestations_that_count(net: Net) -> None:
    """Server side: ``POST /v1/attestations`` keeps only a current peer's attestation of the node's own block
    (``Config.attesting_org``), and the bundle carries only attestations that count."""
    forge = Forge(net.live.home.root, net.live.node.chain_id)
    header = net.live.node.reader().header(net.honest["events"][0]["proof"]["tx"]["header"]["height"])
    assert header is not None
    fake, _ = Forge.outsider("org2", "logistics", "peer", "peer0")
    cases = {
        "self-signed peer": (Forge.attest(header, [fake])[0], 202),
        "member, not a peer": (Forge.attest(header, [forge.signer("org2/alice")])[0], 202),
    }
    with Client(net.live.url, net.live.token) as c:
        for what, (att, code) in cases.items():
            r = c.http.post("/v1/attestations", json=att)
            assert r.status_code == 400 and r.json()["code"] == code, (what, r.text)
        r = c.http.post("/v1/attestations", json=Forge.attest(header, [forge.signer("org3/peer0")])[0])
        assert r.status_code == 200 and r.json()["org"] == "org3"
    # a row the node stored by another path (the consortium link keeps any validly signed one) is not served
    store = net.live.node.ledger.store
    store.add_attestation(header.height, fake.member_id + "-fake", json.dumps(Forge.attest(header, [fake])[0]).encode())
    served = net.bundle(TIN)["events"][0]["proof"]["attestations"]
    assert len(served) == 3 and all(a["cert"] != keys.b64(fake.cert) for a in served)


def test_a_peer_attesting_another_block_raises_a_fork_alarm(net: Net) -> None:
    node = net.live.node
    ours = node.reader().header(1)
    assert ours is not None
    theirs = blk.Header.from_dict({**ours.to_dict(), "state_hash": "ee" * 32})
    att = Forge.attest(theirs, [net.live.signer("org2/peer0")])[0]
    with Client(net.live.url, net.live.token) as c:
        r = c.http.post("/v1/attestations", json=att)
    try:
        assert r.status_code == 400 and r.json()["code"] == 503, r.text
        assert [(a["height"], a["member"]) for a in node.fork_alarms] == [(1, "org2/peer0")]
    finally:
        node.fork_alarms.clear()  # the rest of the module's node is honest
