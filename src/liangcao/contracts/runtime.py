"""The contract runtime: authenticates signers against the consortium configuration and runs contracts.

It implements the executor's :class:`~liangcao.ledger.executor.Runtime` protocol. Signer checks run in
this order for every signature before any Ed25519 verification (so a bad certificate is reported as such
even when its signature is also bad)::

    certificate parses, Ed25519, not a CA        BAD_CERTIFICATE
    its organisation is configured and active    UNKNOWN_ORGANIZATION
    its type matches the organisation's          BAD_CERTIFICATE
    issued by the organisation's current CA      UNKNOWN_CERTIFICATE
    not revoked                                  CERTIFICATE_REVOKED
    block time within its validity               CERTIFICATE_EXPIRED
    no certificate signs twice                   DUPLICATE_SIGNER
  then every signature                           BAD_SIGNATURE
"""

from __future__ import annotations

from typing import Any

from liangcao import limits
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.contracts.base import Context, Registry, Signer, run_guarded
from liangcao.crypto import keys
from liangcao.crypto.identity import CertCache, CertificateError
from liangcao.errors import ContractFailure, LiangcaoError
from liangcao.ledger.executor import TxOutcome
from liangcao.ledger.state import Overlay, StateView
from liangcao.ledger.tx import Tx

GENESIS_CONTRACT = "consortium"
GENESIS_METHOD = "genesis"


class ContractRuntime:
    """Runtime for one chain. Holds caches only (certificates, configuration); no ledger state."""

    def __init__(self, registry: Registry, certs: CertCache | None = None) -> None:
        self.registry = registry
        self.certs = certs or CertCache()
        self._config = cfgmod.Config()
        self._fresh = False
        self.chain_id = ""
        self.height = 0
        self.time_ms = 0

    # ---- configuration ------------------------------------------------------------------------------
    def config(self, view: StateView) -> cfgmod.Config:
        """The configuration as ``view`` has it, reloaded only when its version changed.

        Within a block the version is read once and again only after a transaction that wrote under
        ``consortium/`` (``_fresh``), which saves a state read per transaction.
        """
        if self._fresh:
            return self._config
        version = cfgmod.version_of(view)
        if version != self._config.version:
            self._config = cfgmod.load(view, self.certs)
        self._fresh = True
        return self._config

    # ---- Runtime protocol ---------------------------------------------------------------------------
    def begin_block(self, view: StateView, chain_id: str, height: int, time_ms: int) -> None:
        self.chain_id = chain_id
        self.height = height
        self.time_ms = time_ms
        # A block that was executed but never committed may have left its configuration in the cache.
        self._config = cfgmod.Config()
        self._fresh = False

    def authenticate(self, view: StateView, tx: Tx, sig_ok: bool | None) -> tuple[Signer, ...]:
        if self.height == 0:
            if tx.contract != GENESIS_CONTRACT or tx.method != GENESIS_METHOD or tx.signatures:
                raise LiangcaoError(Code.MALFORMED_TX, "the genesis block holds only the unsigned consortium.genesis")
            return ()
        if not tx.signatures:
            raise LiangcaoError(Code.MISSING_SIGNATURE, "transaction has no signatures")
        return self.check_signers(view, tx, sig_ok)

    def check_signers(self, view: StateView, tx: Tx, sig_ok: bool | None) -> tuple[Signer, ...]:
        return check_signers(self.config(view), self.certs, tx, self.time_ms, sig_ok)

    def run(self, view: Overlay, tx: Tx, signers: tuple[Signer, ...]) -> TxOutcome:
        ctx = Context(
            view,
            tx.contract,
            chain_id=self.chain_id,
            height=self.height,
            time_ms=self.time_ms,
            tx_id=tx.tx_id,
            signers=signers,
            registry=self.registry,
            read_only=False,
            consortium=lambda: self.config(view),
            actor=tx.actor,
        )
        code, message, result = run_guarded(
            lambda: self.registry.call(ctx, tx.contract, tx.method, tx.args, "transaction")
        )
        if code != Code.OK:
            # The discarded writes may have bumped the configuration version the cache is keyed by.
            self._config = cfgmod.Config()
            self._fresh = False
            return TxOutcome(code, message[: limits.message_chars_max])
        if any(k.startswith(cfgmod.PREFIX) for k in view.writes):
            self._fresh = False
        return TxOutcome(Code.OK, "", result, ctx.events)

    def check_sealer(self, view: StateView, cert: bytes, time_ms: int) -> str:
        config = self.config(view)
        try:
            info = self.certs.parse(cert)
        except CertificateError as exc:
            raise LiangcaoError(Code.BAD_BLOCK, f"sealer certificate: {exc.message}") from exc
        org = config.orgs.get(info.org)
        if org is None or not org.active or not self.certs.issued_by(info, org.ca):
            raise LiangcaoError(Code.BAD_BLOCK, f"sealer {info.member_id} is not a member of an active organisation")
        if info.role != "orderer":
            raise LiangcaoError(Code.BAD_BLOCK, f"sealer {info.member_id} has role {info.role}, not orderer")
        if info.fingerprint in config.revoked or not info.not_before_ms <= time_ms <= info.not_after_ms:
            raise LiangcaoError(Code.BAD_BLOCK, f"sealer certificate of {info.member_id} is revoked or not valid")
        return info.member_id

    # ---- queries ------------------------------------------------------------------------------------
    def query(
        self, view: StateView, contract: str, method: str, args: dict[str, Any], *, height: int, time_ms: int
    ) -> Any:
        """Run a ``@query`` against ``view``. Raises :class:`ContractFailure` with the query's code."""
        ctx = Context(
            view,
            contract,
            chain_id=self.chain_id,
            height=height,
            time_ms=time_ms,
            tx_id="",
            signers=(),
            registry=self.registry,
            read_only=True,
            consortium=lambda: cfgmod.load(view, self.certs),
        )
        code, message, result = run_guarded(lambda: self.registry.call(ctx, contract, method, args, "query"))
        if code != Code.OK:
            raise ContractFailure(code, message)
        return result


def check_signers(
    config: cfgmod.Config, certs: CertCache, tx: Tx, time_ms: int, sig_ok: bool | None
) -> tuple[Signer, ...]:
    """The signers of ``tx`` under ``config`` at ``time_ms``, in the order of the module docstring's table.

    Pure: the executor calls it through the runtime, and the node's admission calls it directly on the
    configuration at its head, so what can never authenticate is refused before it reaches ordering.
    """
    signers: list[Signer] = []
    infos = []
    seen: set[str] = set()
    for i, s in enumerate(tx.signatures):
        try:
            info = certs.parse(s.cert)
        except CertificateError as exc:
            raise LiangcaoError(exc.code, f"signature {i}: {exc.message}") from exc
        if info.is_ca:
            raise LiangcaoError(Code.BAD_CERTIFICATE, f"signature {i}: a CA certificate cannot sign transactions")
        org = config.orgs.get(info.org)
        if org is None or not org.active:
            raise LiangcaoError(
                Code.UNKNOWN_ORGANIZATION,
                f"signature {i}: organisation {info.org!r} is not in the consortium",
            )
        if org.type != info.org_type:
            raise LiangcaoError(
                Code.BAD_CERTIFICATE,
                f"signature {i}: certificate says type {info.org_type!r}, organisation is {org.type!r}",
            )
        if not certs.issued_by(info, org.ca):
            raise LiangcaoError(
                Code.UNKNOWN_CERTIFICATE,
                f"signature {i}: certificate of {info.member_id} was not issued by the current CA of {info.org}",
            )
        if info.fingerprint in config.revoked:
            raise LiangcaoError(Code.CERTIFICATE_REVOKED, f"signature {i}: certificate of {info.member_id} is revoked")
        if not info.not_before_ms <= time_ms <= info.not_after_ms:
            raise LiangcaoError(
                Code.CERTIFICATE_EXPIRED,
                f"signature {i}: certificate of {info.member_id} is not valid at block time",
            )
        if info.fingerprint in seen:
            raise LiangcaoError(Code.DUPLICATE_SIGNER, f"signature {i}: {info.member_id} signed twice")
        seen.add(info.fingerprint)
        infos.append(info)
        signers.append(Signer(info.member_id, info.org, info.org_type, info.role, info.fingerprint))
    if tx.actor:
        # The actor first, the others in member order: nothing a relayer can reorder decides who acts.
        acting = [s for s in signers if s.member_id == tx.actor]
        if not acting:
            raise LiangcaoError(Code.MISSING_SIGNATURE, f"the acting party {tx.actor} did not sign")
        signers = acting + sorted((s for s in signers if s.member_id != tx.actor), key=lambda s: s.member_id)
    elif len(signers) > 1:
        signers = sorted(signers, key=lambda s: s.member_id)
    if sig_ok is None:
        tid = tx.id_bytes
        sig_ok = all(
            keys.verify(info.public_key, keys.DOMAIN_TX, tid, s.sig)
            for info, s in zip(infos, tx.signatures, strict=True)
        )
    if not sig_ok:
        raise LiangcaoError(Code.BAD_SIGNATURE, "a signature does not match the transaction id and its certificate")
    return tuple(signers)
