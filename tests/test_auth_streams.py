"""An event stream ends with the token that opened it: when the token expires, and when it is revoked.

The attack: open ``/v1/events?follow=true`` with a token, keep the connection, and go on receiving every
committed event long after the token expired (or after the admin revoked it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from conftest import Live
from liangcao.client import Client, ClientError
from liangcao.codes import Code

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def mint(live: Live, amount: int) -> None:
    with Client(live.url, live.token) as c:
        r = c.call("demo.wallet", "mint", {"to": "org3/alice", "amount": amount}, [live.signer("org3/admin")])
        assert r["code"] == 0, r


class Follower:
    """Follows ``/v1/events`` from a thread, recording every message and when the stream ended."""

    def __init__(self, live: Live, token: str, *, in_query: bool = False) -> None:
        with Client(live.url, live.token) as c:
            self.start = int(c.head()["header"]["height"]) + 1
        self.seen: list[dict[str, Any]] = []
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.client = Client(live.url, None if in_query else token)
        if in_query:  # the explorer's way: a browser's EventSource sends the token in the query
            self.client.http.params = self.client.http.params.set("access_token", token)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # connected and past the replay

    def _run(self) -> None:
        try:
            for e in self.client.events(self.start, contract="demo.wallet", name="minted"):
                self.seen.append(e)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended_at = time.time()
            self.client.close()

    def wait_end(self, seconds: float) -> None:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the stream is still open"
        assert self.error is None, self.error

    def amounts(self) -> list[int]:
        return [e["data"]["amount"] for e in self.seen if e["type"] == "contract"]


@pytest.mark.parametrize("in_query", [False, True], ids=["header", "access_token"])
def test_a_stream_ends_when_its_token_expires(live: Live, in_query: bool) -> None:
    expires = now_ms() + 2000
    token = live.home.auth().create("org2/alice", 1, now_ms=expires - DAY_MS)  # lives two more seconds
    f = Follower(live, token, in_query=in_query)
    mint(live, 101)  # while the token holds, the stream delivers
    deadline = time.time() + 10
    while not f.amounts() and time.time() < deadline:
        time.sleep(0.02)
    assert f.amounts() == [101]
    # Then it expires: the stream ends by itself, idle or not, and says why.
    f.wait_end(10)
    assert f.ended_at is not None and f.ended_at * 1000 >= expires
    assert f.ended_at * 1000 - expires < 1500, "ended long after the token expired"
    last = f.seen[-1]
    assert last["type"] == "end" and last["code"] == Code.UNAUTHORIZED and "expired" in last["message"]
    mint(live, 102)
    time.sleep(0.2)
    assert f.amounts() == [101]  # nothing after expiry
    with Client(live.url, token) as c, pytest.raises(ClientError) as info:  # and it cannot reconnect
        list(c.events(f.start, follow=False))
    assert info.value.code == Code.UNAUTHORIZED


def test_a_stream_ends_when_its_token_is_revoked(live: Live) -> None:
    member = "org3/carol"
    token = live.home.auth().create(member, 1, now_ms=now_ms() - 1000)
    f = Follower(live, token)
    mint(live, 201)
    deadline = time.time() + 10
    while not f.amounts() and time.time() < deadline:
        time.sleep(0.02)
    assert f.amounts() == [201]
    # The admin revokes the member's tokens (`liangcao token revoke`, another process: the file is shared).
    live.home.auth().revoke(member)
    revoked_at = time.time()
    f.wait_end(10)
    assert f.ended_at is not None and f.ended_at - revoked_at < 2.5
    last = f.seen[-1]
    assert last["type"] == "end" and last["code"] == Code.UNAUTHORIZED and "revoked" in last["message"]
    mint(live, 202)
    time.sleep(0.2)
    assert f.amounts() == [201]
    r = httpx.get(f"{live.url}/v1/head", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_a_revoked_token_ends_a_stream_at_the_next_block_too(live: Live) -> None:
    """A block arriving after the revocation is not delivered, even before the idle re-check."""
    member = "org3/dave"
    token = live.home.auth().create(member, 1, now_ms=now_ms() - 1000)
    f = Follower(live, token)
    live.home.auth().revoke(member)
    mint(live, 301)
    f.wait_end(10)
    assert f.amounts() == [] and f.seen[-1]["type"] == "end"
