"""``liangcao authn ...``: the command line of ``liangcao.authn``, mounted by ``liangcao.cli``.

::

    liangcao authn bench [--json]                       confirmations/s against raw ES256 and Ed25519 rates
    liangcao authn serve --home DIR [--port N]          the relying party and its page on 127.0.0.1
    liangcao authn device-register URL SHOPPER NAME --device FILE   a software device registers itself
    liangcao authn pay URL SHOPPER ORDER PAYEE AMOUNT_FEN --device FILE   and confirms a payment

The software device (``SoftAuthenticator``) keeps its private keys and counters in ``--device`` (a JSON
file, mode 0600): it is a phone in a file, for demos and scripts; a real device's key never leaves it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="authn: WebAuthn payment confirmation", no_args_is_help=True, add_completion=False)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("bench")
def bench_cmd(
    shoppers: Annotated[int, typer.Option("--shoppers", help="shoppers paying at once (tasks / threads)")] = 32,
    payments: Annotated[int, typer.Option("--payments", help="payments per shopper, round and way of calling")] = 150,
    rounds: Annotated[int, typer.Option("--rounds", help="interleaved rounds (figures are medians)")] = 3,
    synchronous: Annotated[str, typer.Option("--synchronous", help="FULL (fsync per commit) or NORMAL")] = "FULL",
    verify_workers: Annotated[
        int, typer.Option("--verify-workers", help="signature worker processes of the gateway's path (0 or 1)")
    ] = 1,
    issue_freely: Annotated[
        bool,
        typer.Option(
            "--issue-freely",
            help="open the challenges in whatever order the preparing threads run, not in answer order",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Full verify_payment path (durable) vs raw ES256/Ed25519 verification, measured in the same run."""
    from liangcao.authn.bench import BenchConfig, run

    if min(shoppers, payments, rounds) < 1 or synchronous not in ("FULL", "NORMAL") or verify_workers not in (0, 1):
        err.print("shoppers, payments and rounds are at least 1; --synchronous is FULL or NORMAL; --verify-workers 0|1")
        raise typer.Exit(2)
    out = run(
        BenchConfig(
            shoppers=shoppers,
            payments=payments,
            rounds=rounds,
            synchronous=synchronous,
            verify_workers=verify_workers,
            issue_in_answer_order=not issue_freely,
        )
    )
    table = Table(title=f"authn bench ({out['cores']} cores, store synchronous={synchronous})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("assertions_per_s", "es256_verify_per_s", "ed25519_verify_per_s", "ratio", "bar_met",
                "assertions_per_s_threads", "ratio_threads", "cpu_us_per_assertion_threads",
                "payments_per_fsync_threads", "p50_ms_threads", "p99_ms_threads", "assertions_per_s_one_per_call", "ratio_one_per_call", "assertions_batched_per_s", "ratio_batched",
                "assertions", "cpu_us_per_assertion", "cpu_us_per_assertion_in_worker", "cpu_us_per_assertion_one_per_call",
                "cpu_us_per_assertion_batched", "cpu_us_per_es256_verify", "ratio_cpu",
                "shoppers_concurrent", "payments_per_fsync", "p50_ms", "p99_ms", "relying_party_processes", "cores",
                "peak_rss_mb"):  # fmt: skip
        table.add_row(
            key, f"{out[key]:,}" if isinstance(out[key], int) and not isinstance(out[key], bool) else str(out[key])
        )
    console.print(table)
    console.print("bar: assertions_per_s >= es256_verify_per_s / 2: " + ("met" if out["bar_met"] else "NOT met"))
    if as_json:
        print(json.dumps(out, separators=(",", ":")))


@app.command("serve")
def serve_cmd(
    home: Annotated[Path, typer.Option("--home", help="the relying party's folder (authn.sqlite)")],
    port: Annotated[int, typer.Option("--port")] = 8787,
    rp_id: Annotated[str, typer.Option("--rp-id")] = "localhost",
    origin: Annotated[str | None, typer.Option("--origin", help="default http://localhost:PORT")] = None,
) -> None:
    """Serve the relying party and its page on 127.0.0.1 (open http://localhost:PORT/authn/)."""
    import uvicorn

    from liangcao.authn.http import create_app
    from liangcao.authn.rp import RelyingParty
    from liangcao.errors import StoreError

    try:
        rp = RelyingParty(rp_id, origin or f"http://localhost:{port}", home)
    except StoreError as exc:
        err.print(exc.message)
        raise typer.Exit(1) from None
    console.print(f"authn: http://localhost:{port}/authn/  (rp id {rp_id}, origin {rp.origin})")
    try:
        uvicorn.run(create_app(rp), host="127.0.0.1", port=port, log_level="warning")
    finally:
        rp.close()


# ---- a software device over HTTP -------------------------------------------------------------------------------
def _load_device(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from liangcao.authn.soft import SoftAuthenticator, _Key, unb64url

    dev = SoftAuthenticator()
    if not path.exists():
        return dev
    data = json.loads(path.read_text())
    dev.alg = data["alg"]
    for k in data["keys"]:
        private = serialization.load_pem_private_key(k["pem"].encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise typer.BadParameter(f"{path}: unsupported key")
        cid = unb64url(k["id"])
        dev.keys[cid] = _Key(cid, k["rp_id"], unb64url(k["user_handle"]), k["alg"], private, int(k["counter"]))
    return dev


def _save_device(path: Path, dev: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    from liangcao.authn.soft import b64url

    keys = [
        {
            "id": b64url(k.credential_id),
            "rp_id": k.rp_id,
            "user_handle": b64url(k.user_handle),
            "alg": k.alg,
            "counter": k.counter,
            "pem": k.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
        for k in dev.keys.values()
    ]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"alg": dev.alg, "keys": keys}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    r = httpx.post(url.rstrip("/") + "/authn" + path, json=body, timeout=30)
    data: dict[str, Any] = r.json()
    if r.status_code != 200:
        err.print(f"refused: {data.get('name')} ({data.get('code')}): {data.get('message')}")
        raise typer.Exit(1)
    return data


@app.command("device-register")
def device_register_cmd(
    url: Annotated[str, typer.Argument(help="the service, e.g. http://localhost:8787")],
    shopper: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument(help="the device's name")],
    device: Annotated[Path, typer.Option("--device", help="the software device's key file")],
    alg: Annotated[str, typer.Option("--alg", help="ES256 or Ed25519 (a new device)")] = "ES256",
) -> None:
    """Register a software device (its keys kept in --device) with the running service."""
    dev = _load_device(device)
    if not dev.keys:
        if alg not in ("ES256", "Ed25519"):
            raise typer.BadParameter("--alg is ES256 or Ed25519")
        dev.alg = alg
    opts = _post(url, "/v1/registration/options", {"shopper": shopper, "device_name": name})
    origin = url.rstrip("/").replace("127.0.0.1", "localhost")
    answer = dev.create(opts["publicKey"], origin)
    out = _post(url, "/v1/registration", {"shopper": shopper, "ceremony_id": opts["ceremony_id"], "credential": answer})
    _save_device(device, dev)
    console.print(f"registered {out['name']!r} ({out['alg']}) for {shopper}: {out['id']}")


@app.command("pay")
def pay_cmd(
    url: Annotated[str, typer.Argument(help="the service, e.g. http://localhost:8787")],
    shopper: Annotated[str, typer.Argument()],
    order_id: Annotated[str, typer.Argument()],
    payee: Annotated[str, typer.Argument()],
    amount_fen: Annotated[int, typer.Argument(help="integer fen")],
    device: Annotated[Path, typer.Option("--device", help="the software device's key file")],
    currency: Annotated[str, typer.Option("--currency")] = "CNY",
) -> None:
    """Confirm a payment with the software device, as a phone would after the fingerprint."""
    dev = _load_device(device)
    if not dev.keys:
        err.print(f"{device}: no device registered yet (liangcao authn device-register)")
        raise typer.Exit(1)
    terms = {"shopper": shopper, "order_id": order_id, "payee": payee, "amount_fen": amount_fen, "currency": currency}
    ch = _post(url, "/v1/payment/challenge", terms)
    try:
        answer = dev.get(ch["publicKey"], url.rstrip("/").replace("127.0.0.1", "localhost"))
    except LookupError:
        err.print(f"refused: {device} holds none of the devices the service offers for {shopper} (revoked?)")
        raise typer.Exit(1) from None
    _save_device(device, dev)  # the counter moved on the device whether or not the server accepts
    out = _post(url, "/v1/payment/verify", {**terms, "challenge_id": ch["challenge_id"], "credential": answer})
    console.print(f"confirmed {out['order_id']}: {out['amount_fen']} fen to {out['payee']} with {out['device_name']!r}")
