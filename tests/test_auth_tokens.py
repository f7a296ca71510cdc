"""Bearer tokens: scopes (read vs write), expiry, revocation; the CLI that issues them; custody off by default."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from liangcao.cli import app
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.node.home import NodeHome, init_network
from liangcao.tokens import READ, WRITE, TokenAuth, new_secret

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def auth(tmp_path: Path) -> TokenAuth:
    return TokenAuth(new_secret(tmp_path / "token.secret"), revoked=tmp_path / "token.revoked")


def refused(auth: TokenAuth, token: str) -> str:
    with pytest.raises(LiangcaoError) as info:
        auth.check(token)
    assert info.value.code == Code.UNAUTHORIZED
    return info.value.message


def test_a_token_reads_unless_issued_with_the_write_scope(auth: TokenAuth) -> None:
    read = auth.check(auth.create("org1/alice"))
    assert read.member == "org1/alice" and read.allows(READ) and not read.allows(WRITE)
    write = auth.check(auth.create("org1/alice", scope=WRITE))
    assert write.allows(READ) and write.allows(WRITE)
    with pytest.raises(ValueError, match="scope"):
        auth.create("org1/alice", scope="admin")


def test_a_token_from_before_scopes_only_reads(tmp_path: Path) -> None:
    """A token minted before scopes existed has no ``scope`` claim: it must not become a write credential."""
    secret = bytes(range(32))
    auth = TokenAuth(secret)
    now = now_ms()
    payload = json.dumps({"member": "org1/alice", "iat": now, "exp": now + DAY_MS}, sort_keys=True).encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    b64 = [base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (payload, mac)]
    grant = auth.check(f"lc1.{b64[0]}.{b64[1]}")
    assert grant.allows(READ) and not grant.allows(WRITE)


def test_scope_cannot_be_raised_by_editing_the_token(auth: TokenAuth) -> None:
    prefix, p64, m64 = auth.create("org1/alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(p64 + "=" * (-len(p64) % 4)))
    claims["scope"] = WRITE
    forged = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True).encode()).rstrip(b"=").decode()
    assert "not issued by this node" in refused(auth, f"{prefix}.{forged}.{m64}")


def test_expired_and_revoked_tokens_are_refused(auth: TokenAuth) -> None:
    short = auth.create("org1/alice", 1, now_ms=now_ms() - DAY_MS + 300)  # expires in 0.3 s
    grant = auth.check(short)
    assert auth.still_valid(grant) is None
    assert auth.still_valid(grant, now_ms=grant.exp) == "bearer token has expired"
    time.sleep(0.35)
    assert "expired" in refused(auth, short)

    old = auth.create("org2/bob", now_ms=now_ms() - 1000)
    other = auth.create("org2/carol", now_ms=now_ms() - 1000)
    kept = auth.check(old)
    at = auth.revoke("org2/bob")
    assert "revoked" in refused(auth, old)
    assert "revoked" in (auth.still_valid(kept) or "")  # an open stream asks again and learns it
    assert auth.check(other).member == "org2/carol"  # only that member's tokens
    assert auth.check(auth.create("org2/bob", now_ms=at + 1)).member == "org2/bob"  # issued afterwards: good


def test_revocation_reaches_a_node_that_loaded_its_tokens_earlier(tmp_path: Path) -> None:
    """The running node and the admin's CLI are different processes: the node re-reads token.revoked."""
    secret = new_secret(tmp_path / "token.secret")
    node_side = TokenAuth(secret, revoked=tmp_path / "token.revoked")
    admin_side = TokenAuth(secret, revoked=tmp_path / "token.revoked")
    token = admin_side.create("org1/alice", now_ms=now_ms() - 1000)
    assert node_side.check(token).member == "org1/alice"
    admin_side.revoke("org1/alice")
    assert "revoked" in refused(node_side, token)


def test_cli_issues_scoped_tokens_and_revokes(tmp_path: Path) -> None:
    init_network(tmp_path / "net", 2)
    home = NodeHome.open(tmp_path / "net")
    run = CliRunner().invoke
    r = run(app, ["token", "create", "--home", str(home.root), "--member", "org1/alice"])
    assert r.exit_code == 0, r.output
    read = home.auth().check(r.output.strip())
    assert not read.allows(WRITE)
    r = run(app, ["token", "create", "--home", str(home.root), "--member", "org1/alice", "--scope", "write"])
    assert r.exit_code == 0 and home.auth().check(r.output.strip()).allows(WRITE)
    r = run(app, ["token", "create", "--home", str(home.root), "--member", "org1/alice", "--scope", "root"])
    assert r.exit_code != 0
    time.sleep(0.002)
    r = run(app, ["token", "revoke", "--home", str(home.root), "--member", "org1/alice"])
    assert r.exit_code == 0, r.output
    assert home.auth().still_valid(read) is not None


def test_custody_is_off_unless_the_operator_opts_in(tmp_path: Path) -> None:
    init_network(tmp_path / "net", 2)
    home = NodeHome.open(tmp_path / "net")
    assert home.config["custody"] is False
    assert home.custody_root() is None  # a fresh node signs for no member
    assert home.custody_root(True) == home.root  # node start --custody
    home.config["custody"] = True
    assert home.custody_root() == home.root and home.custody_root(False) is None
    home.config["custody"] = "yes"  # only a JSON true turns it on
    assert home.custody_root() is None
