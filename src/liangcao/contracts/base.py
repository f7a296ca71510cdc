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

Records a contract stores are :class:`Record` structs (``ctx.load``/``ctx.save``), stored as canonical JSON
like any value. Parties are checked with one method, ``ctx.require_party``; methods only other contracts may
call are marked ``@internal(callers=(...))``; secondary indexes are :class:`liangcao.contracts.index.Index`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Self, TypeVar, dataclass_transform, overload

import msgspec

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.domain import PARTY_ROLE_ORDER, PARTY_ROLES  # PARTY_ROLES: the roles that act (a node's never)
from liangcao.errors import ContractFailure, EncodingError, Fault, InvariantViolation, LiangcaoError
from liangcao.ledger.state import Overlay, StateView
from liangcao.ledger.state import present as state_present

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)


class Args(msgspec.Struct, forbid_unknown_fields=True):
    """Base for argument structs: unknown fields are an error, not silently dropped."""


class NoArgs(Args):
    pass


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(msgspec.field,))
class _RecordMeta(msgspec.StructMeta):
    # ``kw_only`` is per class in msgspec: defaulting it here lets every record declare its fields in the
    # order that reads best (optional ones anywhere), and build them by name only. (mypy takes the frozen
    # default from the decorator but not the keyword-only one: a record with a required field after an
    # optional one spells ``class R(Record, kw_only=True)`` for mypy's sake.)
    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> Any:
        kwargs.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, namespace, **kwargs)


class Record(msgspec.Struct, metaclass=_RecordMeta, frozen=True, forbid_unknown_fields=True):
    """Base of the records a contract stores (a voucher, a bill, a pool): typed, immutable, canonical.

    ``ctx.save(key, record)`` stores it as canonical JSON like any value: keys sorted (the order fields are
    declared in never matters), ``None`` as ``null``, and a field holding ``msgspec.UNSET`` left out, as a
    key absent from a dict was. ``ctx.load(Type, key)`` reads it back. Change one with
    ``record.replace(field=value)``: the old value stays as it was, which is what index upkeep compares.

    Reading stored bytes that do not fit the type (an undeclared field, a wrong type) is a broken invariant,
    not a business outcome: a contract's code no longer matches what it wrote, and dropping the field would
    change the bytes on the next write. The commit stops (``InvariantViolation``) instead.
    """

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied."""
        return msgspec.structs.replace(self, **changes)

    def to_value(self) -> Any:
        """The record as canonical-model builtins (dicts, lists, str, int, bool, None), as stored."""
        return msgspec.to_builtins(self)


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
    callers: tuple[str, ...] = ()  # for an internal method: the contracts that may call it (empty: any)


def _mark(kind: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        fn.__liangcao_kind__ = kind  # type: ignore[attr-defined]
        return fn

    return deco


transaction = _mark("transaction")
query = _mark("query")


@overload
def internal(fn: Callable[..., T], /) -> Callable[..., T]: ...


@overload
def internal(*, callers: Iterable[str]) -> Callable[[Callable[..., T]], Callable[..., T]]: ...


def internal(
    fn: Callable[..., T] | None = None, /, *, callers: Iterable[str] = ()
) -> Callable[..., T] | Callable[[Callable[..., T]], Callable[..., T]]:
    """Marks a transaction method that only other contracts invoke, never a transaction directly::

        @internal(callers=("scf.vouchers", "scf.bills"))
        @transaction
        def pay(self, ctx: Context, args: PayArgs) -> None: ...

    The registry refuses a direct call (``FORBIDDEN``, before the arguments are read) and a call from any
    contract not in ``callers`` (``FORBIDDEN``, after them); bare ``@internal`` lets every contract call it.
    Clients and the CLI do not offer internal methods."""

    allowed = tuple(callers)

    def mark(f: Callable[..., T]) -> Callable[..., T]:
        f.__liangcao_internal__ = True  # type: ignore[attr-defined]
        f.__liangcao_callers__ = allowed  # type: ignore[attr-defined]
        return f

    return mark if fn is None else mark(fn)


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
                methods[attr] = Method(
                    attr,
                    kind,
                    fn,
                    args_type,
                    bool(getattr(fn, "__liangcao_internal__", False)),
                    tuple(getattr(fn, "__liangcao_callers__", ())),
                )
        cls.methods = methods


def _party_phrase(roles: tuple[str, ...]) -> str:
    """``("admin", "member")`` -> ``"an admin or member"``: how a refusal names who had to sign."""
    return ("an " if roles[0][0] in "aeiou" else "a ") + " or ".join(roles)


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

    @overload
    def read(self, full_key: str) -> Any: ...

    @overload
    def read(self, full_key: str, type_: type[S]) -> S | None: ...

    def read(self, full_key: str, type_: type[S] | None = None) -> Any:
        """Read any contract's key by its full name (``contract/key``), as a ``type_`` record if given.

        Reading across contracts is allowed (writing is not)."""
        raw = self._view.get(full_key)
        if raw is None:
            return None
        return msgspec.json.decode(raw) if type_ is None else _decode(type_, raw, full_key)

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

    @overload
    def range(self, prefix: str = "") -> Iterator[tuple[str, Any]]: ...

    @overload
    def range(self, prefix: str, type_: type[S]) -> Iterator[tuple[str, S]]: ...

    def range(self, prefix: str = "", type_: type[S] | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs under ``prefix`` in this key space, ascending; keys without the contract prefix.

        With ``type_``, each value is read as that record type (see :class:`Record`)."""
        full = f"{self.contract}/{prefix}"
        cut = len(self.contract) + 1
        for n, (key, raw) in enumerate(self._view.range(full)):
            if n >= limits.range_results_max:
                self.fail(
                    Code.LIMIT_EXCEEDED,
                    f"range over {prefix!r} exceeds range_results_max={limits.range_results_max}",
                )
            yield key[cut:], (msgspec.json.decode(raw) if type_ is None else _decode(type_, raw, key))

    def must_get(self, key: str, missing: str) -> Any:
        """The value at ``key`` in this key space; fails NOT_FOUND with the message ``missing`` if absent."""
        value = self.get(key)
        if value is None:
            self.fail(Code.NOT_FOUND, missing)
        return value

    def exists(self, key: str) -> bool:
        """Whether anything is stored at ``key`` in this key space (nothing is decoded)."""
        return self._view.get(self._key(key)) is not None

    def present(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` (in this key space) hold a value: :meth:`exists` for many keys in one read."""
        full = {self._key(k): k for k in keys}
        return {full[k] for k in state_present(self._view, list(full))}

    def load(self, type_: type[S], key: str) -> S | None:
        """The record at ``key`` in this key space as a ``type_`` (a :class:`Record`), or None if absent."""
        full = self._key(key)
        raw = self._view.get(full)
        return None if raw is None else _decode(type_, raw, full)

    def must_load(self, type_: type[S], key: str, missing: str) -> S:
        """The record at ``key`` as a ``type_``; fails NOT_FOUND with the message ``missing`` if absent."""
        found = self.load(type_, key)
        if found is None:
            self.fail(Code.NOT_FOUND, missing)
        return found

    def save(self, key: str, obj: msgspec.Struct) -> None:
        """Store a record (any msgspec Struct) at ``key``, canonically: see :class:`Record`."""
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

    def party(
        self, party: str = "", *, role: str | Iterable[str] | None = None, org_type: str | Iterable[str] | None = None
    ) -> Signer | None:
        """The signer who acts as ``party`` (see :meth:`require_party`), or None: the same rules, no refusal."""
        roles = _roles(role)
        types = _names(org_type)
        member = "/" in party
        for s in self.signers:
            if s.role not in roles or (types and s.org_type not in types):
                continue
            if not party or (s.member_id if member else s.org) == party:
                return s
        return None

    def require_party(
        self,
        party: str = "",
        *,
        role: str | Iterable[str] | None = None,
        org_type: str | Iterable[str] | None = None,
        code: int | None = None,
        message: str = "",
    ) -> Signer:
        """The signer acting as ``party`` in this transaction; stops the transaction if none signed.

        The one party check. ``party`` is an organisation (``"org1"``: any of its people) or a member
        (``"org1/alice"``: that person); left empty, anyone who matches the other rules. ``role`` narrows
        which roles count (default: ``admin`` or ``member``) and ``org_type`` which organisation types.

        Two rules hold whatever is asked:

        * only people act: a node's ``peer`` or ``orderer`` certificate never counts as a party (asking for
          those roles is a programming error, ``ValueError``), so a stolen node key moves nothing;
        * the acting party comes first: when several signers match, the one the signed body names as
          ``actor`` (``ctx.signer()``) is returned if it matches, else the first co-signer in member order.
          The order of signatures, which the tx id does not cover, never decides.

        A refusal has ``code`` and ``message`` if given, else NOT_SIGNED naming the party, WRONG_ORG_TYPE
        naming the types, or WRONG_ROLE naming the roles.
        """
        found = self.party(party, role=role, org_type=org_type)
        if found is not None:
            return found
        roles = tuple(r for r in PARTY_ROLE_ORDER if r in _roles(role))
        types = _names(org_type)
        if party:
            default = Code.NOT_SIGNED
            who = party if "/" in party else f"{_party_phrase(roles)} of {party}"
            text = f"needs the signature of {who}"
        elif types:
            default, text = Code.WRONG_ORG_TYPE, f"needs a signer from an organisation of type {' or '.join(types)}"
        else:
            default, text = Code.WRONG_ROLE, f"needs a signer with role {' or '.join(roles)}"
        self.fail(default if code is None else code, message or text)

    def require_role(self, *roles: str) -> Signer:
        """The first signer whose role is one of ``roles``; fails WRONG_ROLE if none.

        Prefer :meth:`require_party` (``role=...``), which never accepts a node's certificate."""
        for s in self.signers:
            if s.role in roles:
                return s
        self.fail(Code.WRONG_ROLE, f"needs a signer with role {' or '.join(roles)}")

    def require_org_type(self, *org_types: str) -> Signer:
        """The first signer whose organisation type is one of ``org_types`` and who acts for it as a person
        (role admin or member: a node's peer or orderer certificate never takes business actions); fails
        WRONG_ORG_TYPE if none. The same as ``require_party(org_type=org_types)``."""
        return self.require_party(org_type=org_types)

    def require_caller(self, *contracts: str) -> None:
        """Only another contract (one of ``contracts``) may call this method, never a transaction directly.

        Prefer ``@internal(callers=(...))``, which the registry checks before the method runs."""
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
        if m.callers and ctx.caller not in m.callers:
            raise ContractFailure(Code.FORBIDDEN, f"{contract} may be called only by {', '.join(m.callers)}")
        result = m.fn(c, ctx, typed)
        return None if result is None else msgspec.to_builtins(result)


def _roles(role: str | Iterable[str] | None) -> frozenset[str]:
    """The roles a party check accepts: people only (see ``Context.require_party``)."""
    if role is None:
        return PARTY_ROLES
    roles = frozenset(_names(role))
    if not roles <= PARTY_ROLES:
        raise ValueError(f"a party acts as admin or member, never as {', '.join(sorted(roles - PARTY_ROLES))}")
    if not roles:
        raise ValueError("a party check needs at least one role (leave role out for admin or member)")
    return roles


def _names(names: str | Iterable[str] | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _decode(type_: type[S], raw: bytes, full_key: str) -> S:
    """Stored bytes as a record type. A mismatch is a broken invariant (see :class:`Record`), never an outcome."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise InvariantViolation(
            Code.INTERNAL, f"{full_key} does not hold a {type_.__name__} as its contract stores it: {exc}"
        ) from exc


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
