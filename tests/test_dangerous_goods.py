"""Dangerous-goods declarations on a real node: sealed content, the carrier's decision, versions, who reads what."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Live
from liangcao.client import Client, ClientError, Refused
from liangcao.client.dg import Declarations
from liangcao.codes import Code
from liangcao.shipping import declaration as dg

TYPES = ["shipper", "carrier", "terminal", "terminal", "bank", "shipper"]
SHIPPER, CARRIER, PORT_A, PORT_B, BANK, RIVAL = "org1", "org2", "org3", "org4", "org5", "org6"

CONTENT: dict[str, Any] = {
    "un_number": "UN1203",
    "proper_shipping_name": "GASOLINE",
    "hazard_class": "3",
    "packing_group": "II",
    "net_quantity": 18_000_000,
    "unit": "mL",
    "packages": 80,
    "container": "CSQU3054383",
    "booking": "BK-2026-11-0042",
    "emergency_contact": {"name": "Li Wei, 24h hazmat desk", "phone": "+8657487654321"},
    "marine_pollutant": True,
}


CLIENTS: list[Client] = []


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    live = Live(tmp_path_factory.mktemp("dg") / "net", TYPES)
    yield live
    for c in CLIENTS:
        c.close()
    live.stop()


@pytest.fixture(scope="module")
def keys(net: Live) -> dict[str, Any]:
    """Every organisation's X25519 key, registered on the ledger by its admin."""
    out = {}
    with Client(net.url, net.home.auth().create("org1/admin", 1)) as c:
        for n in range(1, len(TYPES) + 1):
            org = f"org{n}"
            out[org] = dg.new_key()
            Declarations(c, net.signer(f"{org}/admin"), out[org]).register_key()
    return out


def desk(net: Live, member: str, keys: dict[str, Any]) -> Declarations:
    client = Client(net.url, net.home.auth().create(member, 1))
    CLIENTS.append(client)
    return Declarations(client, net.signer(member), keys[member.partition("/")[0]])


def test_container_check_digit_and_content_rules() -> None:
    assert dg.container_check_digit("CSQU305438") == 3
    dg.check(CONTENT)
    bad = {
        "container": ({**CONTENT, "container": "CSQU3054384"}, "ISO 6346 check digit"),
        "group": ({**CONTENT, "packing_group": None}, "needs a packing group"),
        "gas": ({**CONTENT, "hazard_class": "2.1"}, "has no packing group"),
        "class": ({**CONTENT, "hazard_class": "10"}, "not an IMDG class"),
        "un": ({**CONTENT, "un_number": "1203"}, "un_number"),
        "float": ({**CONTENT, "net_quantity": 18.5}, "net_quantity"),
        "phone": ({**CONTENT, "emergency_contact": {"name": "x", "phone": "12345"}}, "phone"),
        "unknown": ({**CONTENT, "colour": "red"}, "colour"),
    }
    for name, (content, needle) in bad.items():
        with pytest.raises(dg.DeclarationError, match=needle):
            dg.check(content)
        assert name


@given(serial=st.text(alphabet="0123456789", min_size=6, max_size=6), owner=st.sampled_from(["CSQ", "MSK", "ZIM"]))
def test_one_wrong_digit_always_fails_the_container_check(serial: str, owner: str) -> None:
    first10 = f"{owner}U{serial}"
    good = f"{first10}{dg.container_check_digit(first10)}"
    dg.check({**CONTENT, "container": good})
    for wrong in set("0123456789") - {good[10]}:
        with pytest.raises(dg.DeclarationError):
            dg.check({**CONTENT, "container": good[:10] + wrong})


def test_submit_approve_and_who_reads_what(net: Live, keys: dict[str, Any]) -> None:
    shipper, carrier = desk(net, f"{SHIPPER}/alice", keys), desk(net, f"{CARRIER}/alice", keys)
    port_a, port_b, bank = (desk(net, f"{o}/alice", keys) for o in (PORT_A, PORT_B, BANK))
    summary = shipper.submit("DG-1", CONTENT, carrier=CARRIER, terminals=[PORT_A])
    assert summary == {
        "id": f"{SHIPPER}/DG-1", "version": 1, "prev": 0, "status": "submitted", "shipper": SHIPPER, "carrier": CARRIER,
        "terminals": [PORT_A],
    }  # fmt: skip
    assert carrier.read("org1/DG-1").content == dg.check(CONTENT)
    assert shipper.read("DG-1").content.un_number == "UN1203"
    # Before approval a terminal is refused by the API, and holds no wrap it could open even from raw state.
    with pytest.raises(ClientError) as err:
        port_a.read("org1/DG-1")
    assert err.value.status == 403 and err.value.code == Code.FORBIDDEN
    raw = shipper.client.state("dg/d/org1/DG-1/000001")["value"]
    assert set(raw["keys"]) == {SHIPPER, CARRIER}
    assert b"GASOLINE" not in base64.b64decode(raw["ct"])
    with pytest.raises(dg.DeclarationError, match="not readable by org3"):
        dg.open_record(raw, shipper.client.chain_id, PORT_A, keys[PORT_A])
    # Only the carrier decides.
    with pytest.raises(Refused) as refused:
        shipper.approve("DG-1", 1)
    assert refused.value.code == Code.FORBIDDEN
    assert carrier.approve("org1/DG-1", 1)["status"] == "approved"
    opened = port_a.read("org1/DG-1")
    assert opened.content.container == "CSQU3054383" and opened.record["decision"]["by"] == f"{CARRIER}/alice"
    # A terminal not named, and a bank, never read it.
    for outsider in (port_b, bank):
        with pytest.raises(ClientError) as err:
            outsider.read("org1/DG-1")
        assert err.value.status == 403
        with pytest.raises(dg.DeclarationError):
            raw = outsider.client.state("dg/d/org1/DG-1/000001")["value"]
            dg.open_record(raw, outsider.client.chain_id, outsider.org, keys[outsider.org])
    with pytest.raises(Refused) as refused:
        carrier.approve("org1/DG-1", 1)
    assert refused.value.code == Code.INVALID_STATE


def test_amendments_are_linked_versions_needing_a_new_decision(net: Live, keys: dict[str, Any]) -> None:
    shipper, carrier = desk(net, f"{SHIPPER}/alice", keys), desk(net, f"{CARRIER}/alice", keys)
    port_a, port_b = desk(net, f"{PORT_A}/alice", keys), desk(net, f"{PORT_B}/alice", keys)
    shipper.submit("DG-2", CONTENT, carrier=CARRIER, terminals=[PORT_A])
    rejected = carrier.reject("org1/DG-2", 1, "packing group for UN1203 in 205 L drums must be II with drum spec")
    assert rejected["status"] == "rejected"
    with pytest.raises(ClientError):
        port_a.read("org1/DG-2")
    second = shipper.amend("DG-2", {**CONTENT, "packages": 79, "remarks": "drums 1A1"}, terminals=[PORT_A, PORT_B])
    assert (second["version"], second["prev"], second["status"]) == (2, 1, "submitted")
    carrier.approve("org1/DG-2", 2)
    assert port_b.read("org1/DG-2").content.packages == 79
    third = shipper.amend("DG-2", {**CONTENT, "packages": 78})
    assert (third["version"], third["prev"], third["terminals"]) == (3, 2, [PORT_A, PORT_B])
    history = shipper.versions("DG-2")
    assert [(v["version"], v["prev"], v["status"]) for v in history] == [
        (1, 0, "rejected"), (2, 1, "superseded"), (3, 2, "submitted"),
    ]  # fmt: skip
    # Terminals keep what they were shown (version 2) but not the unapproved version 3.
    assert port_b.read("org1/DG-2", 2).content.packages == 79
    with pytest.raises(ClientError):
        port_b.read("org1/DG-2", 3)
    # Deciding on a superseded version, or amending from a stale one, is refused by code.
    with pytest.raises(Refused) as refused:
        carrier.approve("org1/DG-2", 2)
    assert refused.value.code == 2201
    with pytest.raises(Refused) as refused:
        carrier.reject("org1/DG-2", 2, "late")
    assert refused.value.code == 2201


def test_bad_envelopes_change_nothing(net: Live, keys: dict[str, Any]) -> None:
    shipper = desk(net, f"{SHIPPER}/alice", keys)
    chain = shipper.client.chain_id
    header = dg.Header(chain, "org1/DG-3", 1, SHIPPER, CARRIER)
    readers = {SHIPPER: dg.public_b64(keys[SHIPPER]), CARRIER: dg.public_b64(keys[CARRIER])}
    envelope = dg.seal(dg.check(CONTENT), header, readers)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"carrier": BANK}, Code.WRONG_ORG_TYPE),  # a bank is no carrier
        ({"terminals": [CARRIER]}, Code.WRONG_ORG_TYPE),
        ({"keys": {SHIPPER: envelope["keys"][SHIPPER]}}, 2200),  # the carrier could not read it
        ({"keys": {**envelope["keys"], CARRIER: {**envelope["keys"][CARRIER], "fp": "0" * 32}}}, 2200),
        ({"nonce": "AAAA"}, Code.INVALID_ARGUMENT),
    ]
    for change, code in cases:
        args = {"id": "org1/DG-3", "carrier": CARRIER, "terminals": [PORT_A], **envelope, **change}
        receipt = shipper.client.call("dg", "submit", args, [shipper.signer])
        assert receipt["code"] == code, (change, receipt)
    with pytest.raises(ClientError) as err:
        shipper.client.query("dg", "declaration", {"id": "org1/DG-3"})
    assert err.value.code == Code.NOT_FOUND
    # A carrier cannot submit, and a declaration id is taken once.
    carrier = desk(net, f"{CARRIER}/alice", keys)
    receipt = carrier.client.call(
        "dg", "submit", {"id": "org1/DG-3", "carrier": CARRIER, "terminals": [], **envelope}, [carrier.signer]
    )
    assert receipt["code"] == Code.WRONG_ORG_TYPE
    shipper.submit("DG-3", CONTENT, carrier=CARRIER, terminals=[])
    with pytest.raises(Refused) as refused:
        shipper.submit("DG-3", CONTENT, carrier=CARRIER, terminals=[])
    assert refused.value.code == Code.ALREADY_EXISTS


def test_tampered_ciphertext_does_not_open(net: Live, keys: dict[str, Any]) -> None:
    carrier = desk(net, f"{CARRIER}/alice", keys)
    record = carrier.client.state("dg/d/org1/DG-3/000001")["value"]
    ct = bytearray(base64.b64decode(record["ct"]))
    ct[0] ^= 1
    with pytest.raises(dg.DeclarationError, match="altered"):
        dg.open_record(
            {**record, "ct": base64.b64encode(bytes(ct)).decode()}, carrier.client.chain_id, CARRIER, keys[CARRIER]
        )
    # The same ciphertext presented as another declaration does not open either (it is bound to its header).
    with pytest.raises(dg.DeclarationError):
        dg.open_record({**record, "id": "org1/DG-4"}, carrier.client.chain_id, CARRIER, keys[CARRIER])


def test_the_api_refuses_outsiders_even_the_history(net: Live, keys: dict[str, Any]) -> None:
    token = net.home.auth().create(f"{BANK}/alice", 1)
    with httpx.Client(base_url=net.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.get("/v1/dg/org1/DG-1/versions")
        assert r.status_code == 403 and r.json()["code"] == Code.FORBIDDEN
        assert c.get("/v1/dg/org1/NOPE").status_code == 404
        assert c.get("/v1/dg/org1/bad id!").status_code in (404, 422, 400)
        assert c.get("/v1/dg/../DG-1").status_code in (404, 422, 400)


def test_the_cli_end_to_end(tmp_path: Path) -> None:
    live = Live(tmp_path / "net", TYPES)
    try:

        def process(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "liangcao.cli", "dg", args[0], "--home", str(live.home.root), *args[1:]]
            return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            # The same commands in this process (each interpreter start costs ~1.5 s); ``process`` keeps the real
            # entry point covered. An exception escaping a command would be a traceback in a process: never.
            from typer.testing import CliRunner

            from liangcao.cli import app

            argv = ["dg", args[0], "--home", str(live.home.root), *args[1:]]
            r = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
            assert r.exception is None or isinstance(r.exception, SystemExit), (argv, r.exc_info)
            return subprocess.CompletedProcess(argv, r.exit_code, r.stdout, r.stderr)

        for org in ("org1", "org2", "org3"):
            r = (process if org == "org1" else cli)("keygen", "--as", f"{org}/admin")
            assert r.returncode == 0 and "registered" in r.stdout, r.stderr
        assert (live.home.root / "orgs" / "org1" / "dg" / "x25519.pem").stat().st_mode & 0o077 == 0
        content = tmp_path / "dg.json"
        content.write_text(json.dumps(CONTENT))
        r = cli("submit", "DG-9", str(content), "--carrier", CARRIER, "--terminal", PORT_A, "--as", f"{SHIPPER}/alice")
        assert r.returncode == 0 and json.loads(r.stdout)["status"] == "submitted", r.stderr
        assert json.loads(r.stdout)["id"] == "org1/DG-9"
        r = cli("show", "org1/DG-9", "--as", f"{PORT_A}/alice")
        assert r.returncode == 1 and "403" not in r.stdout and "not party" in r.stderr
        assert cli("approve", "org1/DG-9", "1", "--as", f"{CARRIER}/alice").returncode == 0
        r = cli("show", "org1/DG-9", "--as", f"{PORT_A}/alice")
        assert r.returncode == 0 and json.loads(r.stdout)["content"]["un_number"] == "UN1203"
        content.write_text(json.dumps({**CONTENT, "container": "CSQU3054384"}))
        r = cli("amend", "DG-9", str(content), "--as", f"{SHIPPER}/alice")
        assert r.returncode == 1 and "check digit" in r.stderr and "Traceback" not in r.stderr
        r = process("reject", "DG-9", "1", "--reason", "late", "--as", f"{SHIPPER}/alice")
        assert r.returncode == 2 and "only the carrier" in r.stderr
        r = cli("versions", "org1/DG-9", "--as", f"{CARRIER}/alice")
        assert r.returncode == 0 and r.stdout.split()[:3] == ["v1", "prev=-", "approved"]
    finally:
        live.stop()


def test_the_rejection_reason_is_sealed_for_shipper_and_carrier(net: Live, keys: dict[str, Any]) -> None:
    """Attack: read the carrier's reason from the shared ledger as a terminal or an outsider. It is sealed."""
    shipper, carrier = desk(net, f"{SHIPPER}/alice", keys), desk(net, f"{CARRIER}/alice", keys)
    port_a, bank = desk(net, f"{PORT_A}/alice", keys), desk(net, f"{BANK}/alice", keys)
    secret = "seam 4 of drum 17 weeps: SECRET-REASON-7731"
    shipper.submit("DG-R", CONTENT, carrier=CARRIER, terminals=[PORT_A])
    # A carrier (or anyone) sending the reason in clear is refused: the ledger would show it to everyone.
    for reason in (secret, {"ct": "", "nonce": dg.b64(os.urandom(12))}, {"ct": dg.b64(b"x" * 16), "nonce": "AA"}):
        receipt = carrier.client.call(
            "dg", "reject", {"id": "org1/DG-R", "version": 1, "reason": reason}, [carrier.signer]
        )
        assert receipt["code"] == Code.INVALID_ARGUMENT, (reason, receipt)
    assert carrier.client.query("dg", "declaration", {"id": "org1/DG-R"})["status"] == "submitted"
    result = carrier.reject("org1/DG-R", 1, secret)
    assert result["status"] == "rejected"
    raw = shipper.client.state("dg/d/org1/DG-R/000001")["value"]
    decision = raw["decision"]
    assert raw["status"] == "rejected" and decision["by"] == f"{CARRIER}/alice"  # the decision stays public
    assert set(decision["reason"]) == {"ct", "nonce"} and "SECRET" not in json.dumps(raw)
    # nowhere in clear: not in the transaction, its receipt or events, nor in the block
    tx = bank.client.tx(decision["tx"])
    block = bank.client.block(decision["height"])
    assert "SECRET" not in json.dumps(tx) and "SECRET" not in json.dumps(block)
    assert b"SECRET" not in base64.b64decode(decision["reason"]["ct"])
    # The shipper and the carrier read it; a terminal named in the declaration and a bank cannot.
    assert shipper.read("DG-R").reason == secret
    assert carrier.read("org1/DG-R").reason == secret
    for outsider in (port_a, bank):
        with pytest.raises(ClientError) as err:
            outsider.read("org1/DG-R")
        assert err.value.status == 403
        with pytest.raises(dg.DeclarationError, match="not readable"):
            dg.open_reason(raw, outsider.client.chain_id, outsider.org, keys[outsider.org])
    # Bound to its version: the same sealed reason moved onto another declaration does not open.
    with pytest.raises(dg.DeclarationError):
        dg.open_reason({**raw, "id": "org1/DG-1"}, shipper.client.chain_id, SHIPPER, keys[SHIPPER])
    # An approved version has no reason at all.
    assert shipper.read("DG-1").reason is None


def test_declaration_ids_belong_to_their_shipper(net: Live, keys: dict[str, Any]) -> None:
    """Attack: another shipper registers org1's declaration id first, to block it. Ids are org1's own names."""
    shipper, rival = desk(net, f"{SHIPPER}/alice", keys), desk(net, f"{RIVAL}/alice", keys)
    with pytest.raises(Refused) as refused:
        rival.submit("org1/DG-SQ", CONTENT, carrier=CARRIER, terminals=[])
    assert refused.value.code == Code.FORBIDDEN and "org6/<name>" in refused.value.message
    with pytest.raises(ClientError) as err:
        shipper.client.query("dg", "declaration", {"id": "org1/DG-SQ"})
    assert err.value.code == Code.NOT_FOUND
    # A bare id (the old, global form) is not an id the ledger takes at all.
    header = dg.Header(rival.client.chain_id, "DG-SQ", 1, RIVAL, CARRIER)
    readers = {o: dg.public_b64(keys[o]) for o in (RIVAL, CARRIER)}
    envelope = dg.seal(dg.check(CONTENT), header, readers)
    receipt = rival.client.call(
        "dg", "submit", {"id": "DG-SQ", "carrier": CARRIER, "terminals": [], **envelope}, [rival.signer]
    )
    assert receipt["code"] == Code.INVALID_ARGUMENT
    for bad in ("org1/DG-SQ\n", "org1/../DG", "Org1/DG-SQ", "org1/DG/SQ"):
        receipt = shipper.client.call(
            "dg", "submit", {"id": bad, "carrier": CARRIER, "terminals": [], **envelope}, [shipper.signer]
        )
        assert receipt["code"] == Code.INVALID_ARGUMENT, bad
    # Each shipper has the name in its own space, and the real shipper is never blocked.
    assert rival.submit("DG-SQ", CONTENT, carrier=CARRIER, terminals=[])["id"] == "org6/DG-SQ"
    mine = shipper.submit("DG-SQ", CONTENT, carrier=CARRIER, terminals=[])
    assert (mine["id"], mine["shipper"], mine["version"]) == ("org1/DG-SQ", SHIPPER, 1)
    assert shipper.read("DG-SQ").record["shipper"] == SHIPPER and rival.read("DG-SQ").record["shipper"] == RIVAL


BAD_MEMBERS = ["../x", "org1/../../x", "/etc/x", "org1/..", "..", "org1/a/b", "org1\\..\\x", "org1/.hidden",
               "org1/", "/alice", "Org1/alice", "org1/alice\n", "org1/al ice"]  # fmt: skip


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_cli_names_never_become_paths_outside_the_network_folder(tmp_path: Path) -> None:
    """Attack: ``dg keygen --as ../x`` wrote a key outside the organisation's folder. Names are checked first."""
    from typer.testing import CliRunner

    from liangcao.cli import app
    from liangcao.node.home import init_network, member_dir

    home = tmp_path / "net"
    init_network(home, 2, org_types=["shipper", "carrier"])
    content = tmp_path / "dg.json"
    content.write_text(json.dumps(CONTENT))
    runner = CliRunner()
    before = _files(tmp_path)
    h = str(home)
    for bad in BAD_MEMBERS:
        commands = [
            ["dg", "keygen", "--home", h, "--as", bad],
            ["dg", "submit", "--home", h, "DG-1", str(content), "--carrier", "org2", "--as", bad],
            ["dg", "show", "--home", h, "org1/DG-1", "--as", bad],
            ["tx", "--home", h, "dg", "register_key", "{}", "--as", bad],
            ["tx", "--home", h, "dg", "register_key", "{}", "--as", "org1/admin", "--as", bad],
            ["trace", "capture", "--home", h, str(content), "--as", bad],
        ]
        for cmd in commands:
            r = runner.invoke(app, cmd)
            assert r.exit_code == 1, (cmd, r.output)
            assert "is not ORG/MEMBER" in r.output and "Traceback" not in r.output, (cmd, r.output)
    for node_dir in ("../x", "/tmp/x", "nodes/../../x", "node/.."):
        r = runner.invoke(app, ["node", "start", "--home", h, "--node", node_dir])
        assert r.exit_code == 1 and "plain names" in r.output, (node_dir, r.output)
    # a well-formed name that is no member of the network writes nothing either
    r = runner.invoke(app, ["dg", "keygen", "--home", h, "--as", "org1/nobody"])
    assert r.exit_code == 1 and "not a member" in r.output
    r = runner.invoke(app, ["dg", "keygen", "--home", h, "--as", "org9/admin"])
    assert r.exit_code == 1 and "not a member" in r.output
    assert _files(tmp_path) == before
    # and the library refuses such names outright
    for bad in BAD_MEMBERS:
        with pytest.raises(ValueError, match="not a member id"):
            member_dir(home, bad)
