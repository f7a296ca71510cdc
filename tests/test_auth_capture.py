"""A read token must not become a write credential, and a node holds no member's key unless told to.

The attack: ``POST /epcis/v2/capture`` makes the node sign a ``trace.capture`` transaction as the member a
bearer token names. With a read token (all a reader ever gets) that turned reading into writing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Live
from liangcao.client import Client
from liangcao.codes import Code
from liangcao.trace.hashing import document_hashes
from trace_ledger import BRAND_PREFIX, document, obj

TYPES = ["brand", "logistics", "customs"]
BRAND = "org1"
CAPTURE_PATHS = ("/epcis/v2/capture", "/epcis/v2/events")


def start(tmp_path_factory: pytest.TempPathFactory, name: str, custody: bool) -> Live:
    live = Live(tmp_path_factory.mktemp(name) / "net", TYPES, custody=custody)
    with Client(live.url, live.token) as c:
        admins = [live.signer(f"org{i}/admin") for i in (1, 2, 3)]
        assert c.call("trace", "assign_prefix", {"prefix": BRAND_PREFIX, "org": BRAND}, admins)["code"] == 0
    return live


@pytest.fixture(scope="module")
def custodian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A node whose operator opted in to custody (``node start --custody``)."""
    live = start(tmp_path_factory, "custodian", custody=True)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A node as it starts by default: no custody."""
    live = start(tmp_path_factory, "plain", custody=False)
    yield live
    live.stop()


def doc(serial: int) -> dict[str, Any]:
    tin = f"urn:epc:id:sgtin:0614141.107346.{serial}"
    return document([obj([tin], "commissioning", "2026-10-01T08:00:00+08:00", action="ADD")])


def body_for(path: str, d: dict[str, Any]) -> str:
    if path == "/epcis/v2/events":  # one event, with the document's context
        return json.dumps({**d["epcisBody"]["eventList"][0], "@context": d["@context"]})
    return json.dumps(d)


def snapshot(live: Live, member: str) -> tuple[int, list[Any]]:
    """The head's height and the member's capture jobs."""
    with Client(live.url, live.home.auth().create(member, 1)) as c:
        return int(c.head()["header"]["height"]), c.get("/epcis/v2/capture")


def nothing_written(live: Live, d: dict[str, Any], before: tuple[int, list[Any]], member: str) -> None:
    time.sleep(0.1)  # a block the node might have cut from a capture would be committed by now
    assert snapshot(live, member) == before  # no block, no capture job: nothing was signed or submitted
    with Client(live.url, live.token) as c:
        page = c.epcis_query(EQ_eventID=document_hashes(d)[0])
        assert page["epcisBody"]["queryResults"]["resultsBody"]["eventList"] == []


@pytest.mark.parametrize("path", CAPTURE_PATHS)
def test_a_read_token_cannot_make_a_custody_node_sign(custodian: Live, path: str) -> None:
    d, member = doc(1), f"{BRAND}/alice"  # a member whose key the custody node holds
    before = snapshot(custodian, member)
    read = custodian.home.auth().create(member, 1)  # what `liangcao token create` hands out by default
    r = httpx.post(custodian.url + path, content=body_for(path, d), headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == Code.INSUFFICIENT_SCOPE and "write" in r.json()["message"]
    # nor by putting the token in the query (that door is for a browser's EventSource reads only)
    write = custodian.home.auth().create(member, 1, scope="write")
    r = httpx.post(custodian.url + path, params={"access_token": write}, content=body_for(path, d))
    assert r.status_code == 401 and r.json()["code"] == Code.UNAUTHORIZED
    nothing_written(custodian, d, before, member)


def test_a_write_token_on_a_custody_node_captures(custodian: Live) -> None:
    """The same request with a write token is what custody is for: it still works, signed as the member."""
    d, member = doc(2), f"{BRAND}/alice"
    write = custodian.home.auth().create(member, 1, scope="write")
    with httpx.Client(base_url=custodian.url, headers={"Authorization": f"Bearer {write}"}, timeout=30) as c:
        r = c.post("/epcis/v2/events", content=body_for("/epcis/v2/events", d))
        assert r.status_code == 201, r.text
        assert r.json()["captured"] == document_hashes(d) and r.json()["member"] == member


@pytest.mark.parametrize("path", CAPTURE_PATHS)
def test_a_node_holds_no_member_keys_by_default(plain: Live, path: str) -> None:
    """Even a write token cannot make a node sign when its operator did not opt in to custody, though the
    members' keys sit in its network folder."""
    d, member = doc(3), f"{BRAND}/alice"
    before = snapshot(plain, member)
    write = plain.home.auth().create(member, 1, scope="write")
    r = httpx.post(plain.url + path, content=body_for(path, d), headers={"Authorization": f"Bearer {write}"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == Code.FORBIDDEN and "custody is off" in r.json()["message"]
    # a read token is refused for its scope first
    read = plain.home.auth().create(member, 1)
    r = httpx.post(plain.url + path, content=body_for(path, d), headers={"Authorization": f"Bearer {read}"})
    assert r.status_code == 403 and r.json()["code"] == Code.INSUFFICIENT_SCOPE
    nothing_written(plain, d, before, member)


def test_without_custody_members_capture_by_signing_themselves(plain: Live) -> None:
    """The SDK path: the client validates, hashes and signs locally and submits signed transactions; a read
    token is all it needs, and the key never leaves the caller."""
    d, member = doc(4), f"{BRAND}/alice"
    with Client(plain.url, plain.home.auth().create(member, 1)) as c:
        results = c.capture(d, plain.signer(member))
        assert [r["id"] for r in results] == document_hashes(d) and results[0]["status"] == "captured"
        page = c.epcis_query(EQ_eventID=document_hashes(d)[0])
        assert len(page["epcisBody"]["queryResults"]["resultsBody"]["eventList"]) == 1
