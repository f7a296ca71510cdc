"""Private data through the HTTP API and the SDK on a served node (org1, a bank): membership decides reads;
non-members' nodes refuse to hold values; endorsement of private SCF terms; a disclosure verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from conftest import Live
from liangcao.apps.scf.private import terms
from liangcao.client import Client, ClientError
from liangcao.client.private import PrivateData
from liangcao.contracts import private as pv
from liangcao.tokens import WRITE
from test_scf_explorer import live_page

TYPES = ["bank", "supplier", "core_enterprise"]  # org1 (this node) is the bank


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    node = Live(tmp_path_factory.mktemp("pvt") / "net", TYPES)
    yield node
    node.stop()


def client(live: Live, member: str, scope: str = "read") -> Client:
    return Client(live.url, live.home.auth().create(member, 1, scope=scope))


def test_members_read_values_others_the_hash(live: Live, tmp_path: Path) -> None:
    alice = live.signer("org1/admin")
    with client(live, "org1/admin", WRITE) as c:
        got = PrivateData(c).put(alice, "bilateral", "deal-1", {"unit_fen": 4321, "sku": "S-9"}, ["org1", "org2"])
        assert got["members"] == ["org1", "org2"]
        mine = PrivateData(c).read("pdc", "bilateral", "deal-1")
        assert mine["value"] == {"unit_fen": 4321, "sku": "S-9"} and pv.matches(
            mine["hash"], bytes.fromhex(mine["salt"]), mine["value"]
        )
        d = PrivateData(c).disclosure("pdc", "bilateral", "deal-1")
        assert pv.check_disclosure(d) == (True, "ok")
        # this node's organisation is not a member: it refuses to hold the value
        with pytest.raises(ClientError) as info:
            PrivateData(c).hand("pdc", "bilateral", "x", {"a": 1}, pv.new_salt(), ["org2", "org3"])
        assert info.value.status == 403 and info.value.code == pv.PrivacyCode.NOT_MEMBER
        # floats are refused like everywhere on the ledger; a stable code, never a 500
        r = c.http.post("/v1/private", json={"contract": "pdc", "collection": "bilateral", "key": "f",
                                             "value": {"rate": 0.05}, "salt": "00" * 32, "members": ["org1"]})  # fmt: skip
        assert r.status_code == 400 and r.json()["code"] > 0
        r = c.http.post("/v1/private", json={"contract": "pdc", "collection": "nope", "key": "f",
                                             "value": 1, "salt": "00" * 32, "members": ["org1"]})  # fmt: skip
        assert r.json()["code"] == pv.PrivacyCode.UNKNOWN_COLLECTION
    with client(live, "org3/carol") as c:
        theirs = PrivateData(c).read("pdc", "bilateral", "deal-1")
        assert theirs["value"] is None and not theirs["member"] and theirs["exists"] and "salt" not in theirs
        with pytest.raises(ClientError) as info:
            PrivateData(c).disclosure("pdc", "bilateral", "deal-1")
        assert info.value.code == pv.PrivacyCode.NOT_MEMBER
        # a read token cannot hand values over
        r = c.http.post("/v1/private", json={"contract": "pdc", "collection": "bilateral", "key": "z", "value": 1,
                                             "salt": "00" * 32, "members": ["org1"]})  # fmt: skip
        assert r.status_code == 403
    r = httpx.get(f"{live.url}/v1/private", params={"contract": "pdc", "collection": "bilateral", "key": "deal-1"})
    assert r.status_code == 401


def test_private_financing_through_the_api(live: Live, browser: Browser) -> None:
    bank, supplier, core = live.signer("org1/admin"), live.signer("org2/admin"), live.signer("org3/admin")
    with client(live, "org1/admin", WRITE) as c:
        inv = c.call("scf.invoices", "register", {"code": "3100", "number": "77", "seller": "org2", "buyer": "org3",
                                                  "amount": 50_000_000, "date": _today(c), "doc_hash": "ab" * 32},
                     [supplier])["result"]["key"]  # fmt: skip
        issue = {
            "to": "org2",
            "face": 50_000_000,
            "maturity": _today(c, 60),
            "invoices": [inv],
            "settlement_bank": "org1",
        }
        vid = c.call("scf.vouchers", "issue", issue, [core])["result"]["voucher"]
        assert c.call("scf.vouchers", "accept", {"voucher": vid}, [supplier])["code"] == 0
        value, salt = terms(vid, "org1", 50_000_000, 450, 59), pv.new_salt()
        args = {"voucher": vid, "bank": "org1", "face": 50_000_000, "endorsements": [],
                "private": {"collection": "financing", "key": vid, "hash": pv.commitment_hash(salt, value)}}  # fmt: skip
        pdata = PrivateData(c)
        # the bank's node checks the terms: inconsistent ones get no endorsement
        with pytest.raises(ClientError) as info:
            bad = {**value, "payout": value["payout"] + 100}
            pdata.endorse("scf.private", "finance", {**args, "private": {**args["private"],
                          "hash": pv.commitment_hash(salt, bad)}}, bad, salt, ["org1", "org2"])  # fmt: skip
        assert info.value.code == pv.PrivacyCode.CHECK_FAILED
        mine = pdata.endorse("scf.private", "finance", args, value, salt, ["org1", "org2"])
        # the supplier's peer endorses on its own node (a solo network here: signed with its peer key)
        peer2 = live.signer("org2/peer0")
        digest = pv.endorsement_digest(c.chain_id, "scf.private", "finance", args)
        args["endorsements"] = [mine, pv.endorse(peer2.key, peer2.cert, digest)]
        receipt = c.call("scf.private", "finance", args, [supplier, bank])
        assert receipt["code"] == 0, receipt
        assert pdata.read("scf.private", "financing", vid)["value"] == value
        voucher = c.query("scf.vouchers", "voucher", {"voucher": vid})
        assert voucher["holder"] == "org1" and voucher["financed_by"] == "org1"
    with client(live, "org3/carol") as c:  # the issuer sees that it is financed, not at what price
        seen = PrivateData(c).read("scf.private", "financing", vid)
        assert seen["value"] is None and seen["members"] == ["org1", "org2"]
    # the explorer's split tree: the bank reads the terms, the issuer sees only that they are private
    for member, shown in (("org1/admin", "450 bps · 59 d"), ("org3/carol", "private ")):
        page = live_page(browser, live.url, live.home.auth().create(member, 1), f"/voucher/{vid}")
        page.wait_for_function("document.querySelectorAll('table td').length > 5")
        text = page.inner_text("table")
        assert shown in text and ("450 bps" in text) == (member == "org1/admin"), text
        page.context.close()


def _today(c: Client, plus_days: int = 0) -> str:
    import datetime as dt

    day = c.node_time_ms() // 86_400_000 + plus_days
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
