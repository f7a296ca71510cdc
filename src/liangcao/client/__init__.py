"""The Python SDK: build and sign transactions locally, submit them, wait, fetch and check proofs, follow events.

Private keys never leave the caller: the client signs in-process and sends only signed transactions.

>>> from liangcao.client import Client, load_signer
>>> alice = load_signer("net/orgs/org1/members/alice")
>>> c = Client("http://127.0.0.1:7800", token="lc1....")
>>> tx = c.build("demo.wallet", "transfer", {"to": "org2/bob", "amount": 100}, [alice])
>>> c.submit(tx, wait=True)["receipt"]["code"]
0
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import msgspec

from liangcao.clock import now_ms
from liangcao.codes import Code
from liangcao.crypto.signer import Signer, load_signer
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.ledger.tx import Tx

__all__ = ["Client", "ClientError", "ContractHandle", "Refused", "Signer", "load_signer", "verify_proof"]


class ClientError(LiangcaoError):
    """An error answer from the node: ``code``, ``message``, ``detail`` as the API sent them, and the status."""

    def __init__(self, status: int, code: int, message: str, detail: Any = None) -> None:
        super().__init__(code, message, detail)
        self.status = status


def verify_proof(proof: dict[str, Any]) -> tuple[bool, str]:
    """Check an inclusion proof offline, with nothing but the proof (see docs/encoding.md section 4)."""
    return blk.verify_proof_dict(proof)


class Client:
    def __init__(
        self, url: str, token: str | None = None, *, chain_id: str | None = None, timeout_s: float = 30.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self._chain_id = chain_id
        self._skew_ms: int | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------------
    def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                body = r.json()
                raise ClientError(r.status_code, int(body["code"]), str(body["message"]), body.get("detail"))
            except (ValueError, KeyError, TypeError):
                raise ClientError(r.status_code, 599, r.text[:200]) from None
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params={k: v for k, v in params.items() if v is not None}))

    # ---- reads ------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        r = self.http.get("/v1/health")
        return dict(r.json())

    @property
    def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = str(self.health()["chain_id"])
        return self._chain_id

    def node_time_ms(self) -> int:
        """The node's clock, estimated from the local one (one /v1/health call, then cached skew).

        Transactions expire by the node's clock, so ``not_after`` is computed from it: a client whose
        clock is behind (or a node whose chain time ran ahead in a rehearsal) still builds valid ones.
        """
        if self._skew_ms is None:
            before = now_ms()
            health = self.health()
            self._skew_ms = int(health.get("time_ms", before)) - (before + now_ms()) // 2
            self._chain_id = self._chain_id or str(health["chain_id"])
        return now_ms() + self._skew_ms

    def sync_clock(self) -> int:
        """Forget the cached clock skew and measure it again (after the node's clock moved)."""
        self._skew_ms = None
        return self.node_time_ms()

    def head(self) -> dict[str, Any]:
        return dict(self.get("/v1/head"))

    def block(self, height: int) -> dict[str, Any]:
        return dict(self.get(f"/v1/blocks/{height}"))

    def tx(self, tx_id: str) -> dict[str, Any]:
        return dict(self.get(f"/v1/txs/{tx_id}"))

    def state(self, key: str, history: int = 0) -> dict[str, Any]:
        return dict(self.get(f"/v1/state/{key}", history=history or None))

    def query(self, contract: str, method: str, args: dict[str, Any] | None = None) -> Any:
        return self._check(self.http.post(f"/v1/query/{contract}/{method}", json=args or {}))["result"]

    # ---- writes -----------------------------------------------------------------------------------------
    def build(
        self,
        contract: str,
        method: str,
        args: dict[str, Any],
        signers: Sequence[Signer],
        *,
        ttl_ms: int = 120_000,
        nonce: str | None = None,
    ) -> Tx:
        """Build and sign a transaction locally, with every signer in ``signers``."""
        return txm.build(
            self.chain_id, contract, method, args, signers, not_after=self.node_time_ms() + ttl_ms, nonce=nonce
        )

    def submit(self, tx: Tx | bytes, *, wait: bool = False, timeout_ms: int = 10_000) -> dict[str, Any]:
        raw = tx.raw if isinstance(tx, Tx) else tx
        params: dict[str, str | int] = {"wait": "true", "timeout_ms": timeout_ms} if wait else {}
        r = self.http.post("/v1/txs", content=raw, params=params, headers={"Content-Type": "application/json"})
        return dict(self._check(r))

    def submit_many(self, txs: Sequence[Tx | bytes]) -> list[dict[str, Any]]:
        raws = [t.raw if isinstance(t, Tx) else t for t in txs]
        body = b'{"txs":[' + b",".join(raws) + b"]}"
        r = self.http.post("/v1/batch/txs", content=body, headers={"Content-Type": "application/json"})
        return list(self._check(r)["results"])

    def call(self, contract: str, method: str, args: dict[str, Any], signers: Sequence[Signer]) -> dict[str, Any]:
        """Build, sign, submit and wait: the receipt of a committed transaction."""
        result = self.submit(self.build(contract, method, args, signers), wait=True)
        if result["status"] != "committed":
            raise ClientError(504, 502, f"transaction {result['tx_id']} not committed in time")
        return dict(result["receipt"])

    def contract(self, name: str, *signers: Signer) -> ContractHandle:
        """Every action and read model of contract ``name`` as Python methods, signed by ``signers``.

        >>> vouchers = c.contract("scf.vouchers", tier1_alice)
        >>> part, rest = vouchers.split(voucher=vid, amounts=[50_000_000])["children"]
        >>> vouchers.tree(voucher=vid)["children"][0]["face"]
        50000000
        """
        return ContractHandle(self, name, signers)

    # ---- traceability (EPCIS 2.0) -------------------------------------------------------------------------
    def capture(self, document: bytes | dict[str, Any], signer: Signer) -> list[dict[str, Any]]:
        """Capture an EPCIS 2.0 document (JSON-LD, or XML bytes), signed here: ``[{id, status}]`` per event.

        The document is validated and hashed locally first (``CaptureRefused`` names each problem), then
        sent as ``trace.capture`` transactions of up to ``trace_events_per_tx_max`` events, each atomic;
        a refused transaction raises ``Refused`` (the events before it stay captured). For all-or-nothing
        capture of a large document, post it to the node's ``/epcis/v2/capture`` instead.
        """
        from liangcao.trace import capture as cap

        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        prepared = cap.prepare(data)
        # compact: each event stored once, in its transaction (``liangcao.apps.trace.anchor``), as the node's
        # own capture jobs do; the node's queries answer the same for either layout
        txs = cap.sign(prepared, cap.pack(prepared), signer, self.chain_id, self.node_time_ms() + 600_000, compact=True)
        out: list[dict[str, Any]] = []
        for t in txs:
            result = self.submit(t, wait=True, timeout_ms=60_000)
            if result["status"] != "committed":
                raise ClientError(504, 502, f"transaction {t.tx_id} not committed in time")
            if result["receipt"]["code"] != Code.OK:
                raise Refused(result["receipt"])
            out += result["receipt"]["result"]
        return out

    def epcis_query(self, **params: str) -> dict[str, Any]:
        """One page of ``GET /epcis/v2/events`` (an EPCISQueryDocument); parameters by their EPCIS names."""
        r = self.http.get("/epcis/v2/events", params=params)
        return dict(self._check(r))

    def provenance(self, identifier: str) -> dict[str, Any]:
        """An item's history through packing and making, with who recorded each event."""
        return dict(self.get("/v1/trace/provenance", id=identifier))

    def proof(self, tx_id: str) -> dict[str, Any]:
        return dict(self.tx(tx_id)["tx_proof"])

    # ---- events -----------------------------------------------------------------------------------------
    def events(
        self,
        from_height: int = 0,
        *,
        contract: str | None = None,
        name: str | None = None,
        follow: bool = True,
        blocks: bool = False,
        last_event_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Committed events as dicts (``type`` is ``contract`` or ``block``, ``id`` resumes the stream)."""
        params: dict[str, str | int] = {
            "from_height": from_height,
            "follow": str(follow).lower(),
            "blocks": str(blocks).lower(),
        }
        if contract:
            params["contract"] = contract
        if name:
            params["name"] = name
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", "/v1/events", params=params, headers=headers, timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            event: dict[str, str] = {}
            for line in r.iter_lines():
                if not line:
                    if "data" in event:
                        yield {
                            "type": event.get("event", "message"),
                            "id": event.get("id", ""),
                            **json.loads(event["data"]),
                        }
                    event = {}
                    continue
                key, _, value = line.partition(":")
                event[key] = value.lstrip(" ")


class Refused(ClientError):
    """The transaction was committed with a non-zero code: the contract refused it and changed nothing."""

    def __init__(self, receipt: dict[str, Any]) -> None:
        super().__init__(200, int(receipt["code"]), str(receipt["message"]), receipt)
        self.receipt = receipt


class ContractHandle:
    """One contract's methods as Python calls (see ``Client.contract``).

    Arguments are keyword arguments, checked here against the contract's own argument types before
    anything is signed or sent, so a typo fails at once with INVALID_ARGUMENT and the field's name.
    A transaction returns its result once committed, or raises ``Refused`` with the receipt's code; a
    query returns its result. Methods only other contracts may invoke are not offered.
    """

    def __init__(self, client: Client, name: str, signers: Sequence[Signer]) -> None:
        from liangcao.apps.bundle import default_registry

        found = default_registry().get(name)
        if found is None:
            raise ClientError(400, Code.UNKNOWN_CONTRACT, f"no contract named {name!r}")
        self._client = client
        self._contract = found
        self.name = name
        self.signers = tuple(signers)

    def methods(self) -> dict[str, str]:
        """Method name -> kind (``transaction`` or ``query``), internal ones left out."""
        return {n: m.kind for n, m in sorted(self._contract.methods.items()) if not m.internal}

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.methods()]

    def __getattr__(self, method: str) -> Any:
        m = self._contract.methods.get(method)
        if m is None or m.internal or method.startswith("_"):
            raise AttributeError(f"contract {self.name!r} has no method {method!r}")

        def call(**args: Any) -> Any:
            try:
                msgspec.convert(args, m.args_type, strict=True)
            except msgspec.ValidationError as exc:
                raise ClientError(400, Code.INVALID_ARGUMENT, f"{self.name}.{method}: {exc}") from None
            if m.kind == "query":
                return self._client.query(self.name, method, args)
            if not self.signers:
                raise ClientError(400, Code.MISSING_SIGNATURE, f"{self.name}.{method} needs signers")
            receipt = self._client.call(self.name, method, args, self.signers)
            if receipt["code"] != Code.OK:
                raise Refused(receipt)
            return receipt["result"]

        call.__name__ = method
        call.__doc__ = m.fn.__doc__
        return call
