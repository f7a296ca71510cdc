"""The contract programming model: ``Contract``, ``@transaction``, ``@query``, ``Context``.

Theory of operation
-------------------
A contract is a class with a ``name`` and methods marked ``@transaction`` (may write) or ``@query``
(read-only). Each takes ``(self, ctx, args)`` where ``args`` is annotated with a msgspec ``Struct``; the
runtime converts the transaction's JSON arguments into it *before* the method runs (strictly: no
coercions, unknown fields refused), so contract code only ever sees well-typed values.

``Context`` is everything a contract may touch: its own key space (``get``/``put``/``delete``/``range``,
keys automatically prefixed with ``<contract name>/``), read access to any key (``read``), who signed
(``signed_by``, ``signers``), the block's height and time, ``emit`` for events, ``invoke`` to call another
contract's transaction inside the same atomic transaction, and ``fail`` to stop with a stable code.
Contracts must be deterministic: no floats (refused at every write), no clock, no randomness, no I/O, and
iteration only in key order. Every write, event and call is bounded by ``liangcao.limits``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeVar

import msgspec

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.errors import ContractFailure, EncodingError, Fault, InvariantViolation, LiangcaoError
from liangcao.ledger.state import Overlay, StateView

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)


class Args(msgspec.Struct, forbid_unknown_fields=True):
    """Base for argument structs: unknown fields are an error, not silently dropped."""


class NoArgs(Args):
    pass


@dataclass(frozen=True, slots=True)
class Signer:
    """An authenticated signer of the current transaction."""

    member_id: str  # "<org>/<cn>"
    org: str
    org_type: str
    role: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    kind: str  # "transaction" | "query"
    fn: Callable[..., Any]
    args_type: type[msgspec.Struct]
    internal: bool = False  # only other contracts call it (see ``internal``); clients and the CLI hide it


def _mark(kind: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        fn.__liangcao_kind__ = kind  # type: ignore[attr-defined]
        return fn

    return deco


transaction = _mark("transaction")
query = _mark("query")


def internal(fn: Callable[..., T]) -> Callable[..., T]:
    """Marks a transaction method that only other contracts invoke (it should ``require_caller``)."""
    fn.__liangcao_internal__ = True  # type: ignore[attr-defined]
    return fn


class Contract:
    """Base class of all contracts. Subclasses set ``name`` and mark methods."""

    name: ClassVar[str] = ""
    methods: ClassVar[dict[str, Method]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods: dict[str, Method] = {}
        for base in reversed(cls.__mro__):
            for attr, fn in vars(base).items():
                kind = getattr(fn, "__liangcao_kind__", None)
                if kind is None:
                    continue
                hints = typing.get_type_hints(fn)
                params = list(inspect.signature(fn).parameters)
                if len(params) != 3:
                    raise TypeError(f"{cls.__name__}.{attr} must take (self, ctx, args)")
                args_type = hints.get(params[2])
                if not (isinstance(args_type, type) and issubclass(args_type, msgspec.Struct)):
                    raise TypeError(f"{cls.__name__}.{attr}: args must be annotated with a msgspec Struct")
                methods[attr] = Method(attr, kind, fn, args_type, bool(getattr(fn, "__liangcao_internal__", False)))
        cls.methods = methods


#: Roles that take business actions. ``peer`` and ``orderer`` certificates belong to an organisation's nodes:
#: they attest and seal, and a stolen node key must not freeze a voucher or vote.
PARTY_ROLES = frozenset({"admin", "member"})


class Context:
    """What a contract sees while it runs. See the module docstring."""

    def __init__(
        self,
        view: Overlay | StateView,
        contract: str,
        *,
        chain_id: str,
        height: int,
        time_ms: int,
        tx_id: str,
        signers: tuple[Signer, ...],
        registry: Registry,
        read_only: bool,
        events: list[dict[str, Any]] | None = None,
        depth: int = 0,
        consortium: Callable[[], Any] | None = None,
        caller: str = "",
        actor: str = "",
    ) -> None:
        self._view = view
        self.contract = contract
        self.chain_id = chain_id
        self.height = height
        self.time_ms = time_ms
        self.tx_id = tx_id
        self.signers = signers
        self._registry = registry
        self.read_only = read_only
        self.events: list[dict[str, Any]] = events if events is not None else []
        self._depth = depth
        self._consortium = consortium
        #: The contract that invoked this one ("" when the transaction called it directly).
        self.caller = caller
        #: The acting party named in the signed body ("" when the transaction has one signer or names none).
        self.actor = actor

    def consortium(self) -> Any:
        """The consortium configuration (:class:`liangcao.contracts.config.Config`) as of this transaction."""
        if self._consortium is None:
            self.fail(Code.FORBIDDEN, "the consortium configuration is not available here")
        return self._consortium()

    # ---- keys -----------------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        if type(key) is not str or not key or not encoding.printable(key):
            self.fail(Code.BAD_KEY, f"key {key!r} must be a non-empty printable string")
        full = f"{self.contract}/{key}"
        if len(full.encode()) > limits.key_bytes_max:
            self.fail(Code.LIMIT_EXCEEDED, f"key is longer than key_bytes_max={limits.key_bytes_max} bytes")
        return full

    def get(self, key: str) -> Any:
        """The value at ``key`` in this contract's key space, or None."""
        return self.read(self._key(key))

    def read(self, full_key: str) -> Any:
        """Read any contract's key by its full name (``contract/key``). Reading across contracts is allowed."""
        raw = self._view.get(full_key)
        return None if raw is None else msgspec.json.decode(raw)

    def put(self, key: str, value: Any) -> None:
        full = self._key(key)
        view = self._writable()
        try:
            data = encoding.canonical(value)
        except EncodingError as exc:
            raise ContractFailure(exc.code, f"value for {key!r}: {exc.message}") from exc
        if len(data) > limits.value_bytes_max:
            self.fail(
                Code.LIMIT_EXCEEDED,
                f"value for {key!r} is larger than value_bytes_max={limits.value_bytes_max}",
            )
        self._count_write(view, full)
        view.writes[full] = data

    def delete(self, key: str) -> None:
        full = self._key(key)
        view = self._writable()
        self._count_write(view, full)
        view.writes[full] = None

    def range(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """(key, value) pairs under ``prefix`` in this key space, ascending; keys without the contract prefix."""
        full = f"{self.contract}/{prefix}"
        cut = len(self.contract) + 1
        for n, (key, raw) in enumerate(self._view.range(full)):
            if n >= limits.range_results_max:
                self.fail(
                    Code.LIMIT_EXCEEDED,
                    f"range over {prefix!r} exceeds range_results_max={limits.range_results_max}",
                )
            yield key[cut:], msgspec.json.decode(raw)

    def must_get(self, key: str, missing: str) -> Any:
        """The value at ``key`` in this key space; fails NOT_FOUND with the message ``missing`` if absent."""
        value = self.get(key)
        if value is None:
            self.fail(Code.NOT_FOUND, missing)
        return value

    def load(self, type_: type[S], key: str) -> S | None:
        """Read ``key`` as a msgspec Struct of ``type_`` (or None)."""
        raw = self._view.get(self._key(key))
        return None if raw is None else msgspec.json.decode(raw, type=type_)

    def save(self, key: str, obj: msgspec.Struct) -> None:
        self.put(key, msgspec.to_builtins(obj))

    def _writable(self) -> Overlay:
        if self.read_only or not isinstance(self._view, Overlay):
            self.fail(Code.FORBIDDEN, "queries cannot write")
        return self._view

    @staticmethod
    def _count_write(view: Overlay, full: str) -> None:
        if full not in view.writes and len(view.writes) >= limits.writes_per_tx_max:
            raise ContractFailure(Code.LIMIT_EXCEEDED, f"more than writes_per_tx_max={limits.writes_per_tx_max} writes")

    # ---- signers and rules ------------------------------------------------------------------------------
    def signed_by(self, member_id: str) -> bool:
        return any(s.member_id == member_id for s in self.signers)

    def signed_by_org(self, org: str, role: str | None = None) -> bool:
        return any(s.org == org and (role is None or s.role == role) for s in self.signers)

    def signer(self) -> Signer:
        """The acting party: the only signer, or the one the signed body names as ``actor``.

        Signers come from the runtime with the actor first and the rest in member order, so no order of
        signatures (which the tx id does not cover) can change who acts."""
        if not self.signers:
            self.fail(Code.NOT_SIGNED, "this action needs a signer")
        if len(self.signers) > 1 and not self.actor:
            self.fail(Code.NOT_SIGNED, "a transaction with several signers must name its acting party (body.actor)")
        return self.signers[0]

    def require(self, condition: object, code: int, message: str) -> None:
        if not condition:
            self.fail(code, message)

    def require_signed_by(self, member_id: str) -> None:
        self.require(self.signed_by(member_id), Code.NOT_SIGNED, f"must be signed by {member_id}")

    def require_role(self, *roles: str) -> Signer:
        """The first signer whose role is one of ``roles``; fails WRONG_ROLE if none."""
        for s in self.signers:
            if s.role in roles:
                return s
        self.fail(Code.WRONG_ROLE, f"needs a signer with role {' or '.join(roles)}")

    def require_org_type(self, *org_types: str) -> Signer:
        """The first signer whose organisation type is one of ``org_types`` and who acts for it as a person
        (role admin or member: a node's peer or orderer certificate never takes business actions); fails
        WRONG_ORG_TYPE if none."""
        for s in self.signers:
            if s.org_type in org_types and s.role in PARTY_ROLES:
                return s
        self.fail(Code.WRONG_ORG_TYPE, f"needs a signer from an organisation of type {' or '.join(org_types)}")

    def require_caller(self, *contracts: str) -> None:
        """Only another contract (one of ``contracts``) may call this method, never a transaction directly."""
        if self.caller not in contracts:
            self.fail(Code.FORBIDDEN, f"{self.contract} may be called only by {', '.join(contracts)}")

    def signer_of_org(self, org: str, *roles: str) -> Signer | None:
        """A signer from organisation ``org`` (with one of ``roles``, if given)."""
        for s in self.signers:
            if s.org == org and (not roles or s.role in roles):
                return s
        return None

    @staticmethod
    def fail(code: int, message: str, detail: Any = None) -> NoReturn:
        raise ContractFailure(code, message, detail)

    # ---- events and calls -----------------------------------------------------------------------------
    def emit(self, name: str, data: Any) -> None:
        if len(self.events) >= limits.events_per_tx_max:
            self.fail(Code.LIMIT_EXCEEDED, f"more than events_per_tx_max={limits.events_per_tx_max} events")
        event = {"contract": self.contract, "name": name, "data": msgspec.to_builtins(data)}
        try:
            size = len(encoding.canonical(event))
        except EncodingError as exc:
            raise ContractFailure(exc.code, f"event {name!r}: {exc.message}") from exc
        if size > limits.event_bytes_max:
            self.fail(Code.LIMIT_EXCEEDED, f"event {name!r} is larger than event_bytes_max={limits.event_bytes_max}")
        self.events.append(event)

    def invoke(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        """Run another contract's transaction within this one: same signers, same all-or-nothing outcome."""
        if self._depth + 1 > limits.call_depth_max:
            self.fail(Code.LIMIT_EXCEEDED, f"calls nest deeper than call_depth_max={limits.call_depth_max}")
        child = Context(
            self._view,
            contract,
            chain_id=self.chain_id,
            height=self.height,
            time_ms=self.time_ms,
            tx_id=self.tx_id,
            signers=self.signers,
            registry=self._registry,
            read_only=self.read_only,
            events=self.events,
            depth=self._depth + 1,
            consortium=self._consortium,
            caller=self.contract,
            actor=self.actor,
        )
        return self._registry.call(child, contract, method, args, "query" if self.read_only else "transaction")


class Registry:
    """The contracts a chain runs, by name. A consortium pins this set (see ``bundle_hash``)."""

    def __init__(self, contracts: list[Contract] | None = None) -> None:
        self._contracts: dict[str, Contract] = {}
        for c in contracts or []:
            self.add(c)

    def add(self, contract: Contract) -> None:
        if not contract.name or contract.name in self._contracts:
            raise ValueError(f"contract name {contract.name!r} is empty or already registered")
        self._contracts[contract.name] = contract

    def names(self) -> list[str]:
        return sorted(self._contracts)

    def get(self, name: str) -> Contract | None:
        return self._contracts.get(name)

    def method(self, contract: str, method: str, kind: str) -> tuple[Contract, Method]:
        c = self._contracts.get(contract)
        if c is None:
            raise ContractFailure(Code.UNKNOWN_CONTRACT, f"no contract named {contract!r}")
        m = c.methods.get(method)
        if m is None or m.kind != kind:
            raise ContractFailure(Code.UNKNOWN_METHOD, f"contract {contract!r} has no {kind} {method!r}")
        return c, m

    def call(self, ctx: Context, contract: str, method: str, args: dict[str, Any], kind: str) -> Any:
        c, m = self.method(contract, method, kind)
        if m.internal and not ctx.caller:
            raise ContractFailure(Code.FORBIDDEN, f"{contract}.{method} is internal: only other contracts invoke it")
        try:
            typed = msgspec.convert(args, m.args_type, strict=True)
        except msgspec.ValidationError as exc:
            raise ContractFailure(Code.INVALID_ARGUMENT, f"{contract}.{method}: {exc}") from exc
        result = m.fn(c, ctx, typed)
        return None if result is None else msgspec.to_builtins(result)


def run_guarded(fn: Callable[[], Any]) -> tuple[int, str, Any]:
    """Run contract code, mapping outcomes to (code, message, result). Contract bugs are recorded, not raised.

    Why catch everything: an exception from contract code is deterministic (same on every peer), so it is a
    business outcome of that transaction (CONTRACT_ERROR), not a reason to stop the chain.
    """
    try:
        result = fn()
    except LiangcaoError as exc:
        return exc.code, exc.message, None
    except (Fault, MemoryError, OSError):
        raise  # this machine failed, not the transaction: the commit stops (errors.py, "two channels")
    except RecursionError as exc:
        # Where Python stops a recursion depends on the caller's stack (the node, audit and rebuild differ),
        # so it can never be an outcome recorded the same on every peer. Inputs are bounded (args_depth_max,
        # call_depth_max, trace_depth_max) so that no built-in contract recurses anywhere near it: reaching
        # it is a bug, and the commit stops rather than fork the peers.
        raise InvariantViolation(Code.INTERNAL, "contract code recursed to the interpreter's limit") from exc
    except Exception as exc:
        return Code.CONTRACT_ERROR, f"contract raised {type(exc).__name__}", None
    try:
        encoding.check_value(result)
    except EncodingError as exc:
        return exc.code, f"result: {exc.message}", None
    return Code.OK, "", result
