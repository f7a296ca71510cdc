"""``cover``: consumer cover insurance (return shipping, price protection, local return) paid from signed facts.

Theory of operation
-------------------
An **insurer** pledges capital (``pledge_capital``) and publishes **products** (``publish``): a kind, a
premium rule, an indemnity rule, a claim window and the price marks it excludes. At checkout a **platform**
buys policies for its shopper (``buy``): each is bound to the order, the SKU and the price paid, priced from
the product's rule (return shipping by the shopper's own claim ratio) and reserves its **exposure** (the most
it can pay) against the insurer's capital; ``reserved + owed <= pledged`` holds after every transaction.

A claim (``claim``) is decided by this contract from facts on the ledger alone, once per policy:

=================  ====================================================================================
price_protection   the platform's signed price feed (``post_price``): refund ``paid - lowest regular
                   price`` of the same SKU from purchase to the claim within the window, at most the
                   exposure; prices marked as the product's exclusions (flash sale, coupon) never count
return_shipping    a ``shipping`` event anchored by the ``trace`` contract, recorded by a courier
                   (logistics or carrier), whose business transactions name the order (``po``) and a
                   return (``rma``), at the order's address, within the window: pays the indemnity
local_return       the same with a warehouse's ``receiving`` event (the drop-off)
=================  ====================================================================================

A refused claim changes nothing and says why with its own code (no fact, wrong fact, after the window,
twice, excluded price, too frequent, address mismatch, fact used). An approved claim stores the rule and the
facts that decided it (also the receipt's result) and emits ``claim_approved``; the insurer's payout adapter
(``liangcao.adapters.payout``) pays it through the payments core under a transfer id derived from the policy
and records the payment (``record_payout``), exactly once. Premiums travel the same way (``policy_bought``,
``record_premium``). Claims from accounts that share a device or an address with too many others are held
(``claim_held``) until the insurer reviews them (``review``).

A premium agreed between a platform and an insurer outside the published rule is bought with
``buy_private`` (one product): the premium ``{platform, insurer, product, order, sku, premium}`` goes to the
private collection ``premiums`` (members: the platform and the insurer; no regulator by this collection's
policy), the policy records ``premium = 0`` and ``premium_terms`` (the commitment's key), and neither the
premium book (``Capital.premiums_due``, ``pdue/...``) nor the ``policy_bought`` event holds the amount. The
insurer's and the platform's peers endorse it (:func:`check_premium`: the value names this sale and a
premium of 1..money_fen_max). The exposure is public as for every policy: ``reserved + owed <= pledged`` is
still checked by every peer. The premium is collected through the payments core as before (its amount is
in the private value).

State (``cover/...``)::

    prod/<id>                         Product
    cap/<insurer>                     Capital: pledged, reserved, owed, paid, premiums (due and collected)
    pol/<policy>                      Policy (status active -> held -> approved -> paid | rejected | expired)
    claim/<policy>                    Claim: the decision, its rule and facts, the payout
    bound/<order+sku digest>/<prod>   one policy per order, SKU and product
    shopper/<platform>/<shopper>      the shopper's return-shipping history, recent returns and flags
    dev/<digest>, addr/<digest>       the shoppers seen on a device or an address
    pday/<platform>/<sku>/<day>       the platform's price posts of a day
    used/<event hex>                  a pickup or drop-off event that already decided a claim
    due/<insurer>/<policy>            payouts approved, not yet paid
    pdue/<insurer>/<policy>           premiums not yet collected
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import msgspec

from liangcao import limits
from liangcao.apps.cover import rules
from liangcao.apps.cover.rules import DAY_MS, CoverCode
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, Record, Signer, query, transaction
from liangcao.contracts.private import (
    Collection,
    Endorsements,
    PrivacyCode,
    PrivateRef,
    put_private,
    require_endorsements,
)
from liangcao.domain import Money, OrgId, org_of
from liangcao.errors import InvariantViolation
from liangcao.trace.depth import check_json
from liangcao.trace.facts import facts as event_facts
from liangcao.trace.facts import index_form
from liangcao.trace.hashing import Hasher, hash_of_prehash

_decoder = msgspec.json.Decoder(float_hook=Decimal)  # EPCIS quantities are decimals: never a float here
_BTT = ("https://ref.gs1.org/cbv/BTT-", "urn:epcglobal:cbv:btt:", "cbv:BTT-", "gs1:BTT-")
_SDT = ("https://ref.gs1.org/cbv/SDT-", "urn:epcglobal:cbv:sdt:", "cbv:SDT-", "gs1:SDT-")

ProductId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,47}$")]
PolicyId = Annotated[str, msgspec.Meta(pattern=r"^P[0-9a-f]{64}\.[1-9]$")]
Text = Annotated[str, msgspec.Meta(pattern=r"^[!-~]{1,200}$")]  # printable ASCII, no spaces: URIs, ids
Sku = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
ShopperId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
EventId = Annotated[str, msgspec.Meta(pattern=r"^ni:///sha-256;[0-9a-f]{64}(\?ver=CBV2\.0)?$")]
Fen = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Bps = Annotated[int, msgspec.Meta(ge=0, le=rules.BPS)]
Cursor = Annotated[str, msgspec.Meta(max_length=300)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=rules.page_max)]
Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]


# ---- records ---------------------------------------------------------------------------------------------
class Product(Record):
    """``cover/prod/<id>``: what an insurer sells, and the rules that price and pay it."""

    id: str
    insurer: str
    kind: str
    title: str
    base_fen: int  # premium: base_fen + price_paid * rate_bps / 10^4, loaded by claim ratio for return shipping
    rate_bps: int
    loading_bps: int
    refuse_ratio_bps: int  # return shipping is not sold to a shopper whose claim ratio is above this (0: always)
    indemnity_fen: int  # the fixed indemnity, or for price protection the cap per policy
    window_days: int
    exclusions: list[str]  # price marks that never count for price protection
    shopper_returns_max: int  # return claims per shopper in RETURN_PERIOD_DAYS
    active: bool
    published_ms: int
    tx: str


class Capital(Record):
    """``cover/cap/<insurer>``: pledged capital and what is reserved, owed and paid against it (fen)."""

    insurer: str
    pledged: int = 0
    reserved: int = 0  # exposure of the policies still open
    owed: int = 0  # approved claims not yet paid
    paid: int = 0
    premiums_due: int = 0
    premiums: int = 0  # collected
    policies: int = 0


class Policy(Record):
    """``cover/pol/<id>``: one policy bound to an order, a SKU and the price paid."""

    id: str
    product: str
    insurer: str
    kind: str
    platform: str
    shopper: str
    order: str
    sku: str
    price_paid: int
    premium: int
    exposure: int
    address: str
    device: str
    bought_ms: int
    height: int  # the block that sold it: a pickup anchored before it proves nothing
    window_end_ms: int
    status: str  # active | held | approved | paid | rejected | expired
    premium_transfer: str
    tx: str
    # a premium agreed privately (``buy_private``): the key of its commitment; ``premium`` is then 0
    premium_terms: str | msgspec.UnsetType = msgspec.UNSET


class Claim(Record):
    """``cover/claim/<policy>``: the decision, with the rule and facts that made it, and its payout."""

    policy: str
    status: str  # held | approved | paid | rejected
    amount: int
    rule: dict[str, Any]
    facts: list[dict[str, Any]]
    held: str  # why the claim waits for review ("" if it did not)
    filed_ms: int
    by: str
    tx: str
    transfer: str = ""
    paid_ms: int = 0
    paid_tx: str = ""
    reviewed_by: str = ""


class Shopper(Record):
    """``cover/shopper/<platform>/<id>``: return-shipping cover bought and claimed (the premium's claim ratio),
    the times of recent return claims (the frequency guard) and the flags on the shopper.

    Keyed by the platform: shopper ids are each platform's own pseudonyms, so another platform naming the
    same id must not load this shopper's premium, use up their returns or flag them."""

    shopper: str
    policies: int = 0
    claims: int = 0
    returns: list[int] = msgspec.field(default_factory=list)
    # Why a risk engine holds this shopper's claims, by the organisation (an insurer or the platform) that
    # flagged them: an insurer's flag holds claims on its own policies only.
    flags: dict[str, str] = msgspec.field(default_factory=dict)


class Seen(Record):
    """``cover/dev/<digest>``, ``cover/addr/<digest>``: the shoppers who bought cover from a device or address."""

    shoppers: list[str]


# ---- arguments -------------------------------------------------------------------------------------------
class AmountArgs(Args):
    amount: Money


class PublishArgs(Args):
    id: ProductId
    kind: rules.Kind
    indemnity_fen: Money
    window_days: Annotated[int, msgspec.Meta(ge=1, le=rules.window_days_max)]
    title: Annotated[str, msgspec.Meta(max_length=120)] = ""
    base_fen: Fen = 0
    rate_bps: Bps = 0
    loading_bps: Annotated[int, msgspec.Meta(ge=0, le=10 * rules.BPS)] = 0
    refuse_ratio_bps: Bps = 0
    exclusions: Annotated[list[rules.Mark], msgspec.Meta(max_length=rules.exclusions_max)] = msgspec.field(
        default_factory=lambda: ["flash_sale", "coupon"]
    )
    shopper_returns_max: Annotated[int, msgspec.Meta(ge=1, le=rules.shopper_returns_max_max)] = 5


class ProductArgs(Args):
    id: ProductId


class BuyArgs(Args):
    products: Annotated[list[ProductId], msgspec.Meta(min_length=1, max_length=rules.covers_per_order_max)]
    order: Text
    shopper: ShopperId
    sku: Sku
    price_paid: Money
    address: Text  # the order's address as a location id (SGLN, Digital Link or the platform's URI)
    device: Text  # the device the order came from (the platform's pseudonymous id)


class BuyPrivateArgs(BuyArgs):
    platform: OrgId
    insurer: OrgId
    private: PrivateRef
    endorsements: Endorsements


PREMIUM_FIELDS = frozenset({"platform", "insurer", "product", "order", "sku", "premium"})


def check_premium(value: Any, args: Any) -> str:
    """ "" if ``value`` is a premium for the sale ``args`` of ``buy_private`` names, else why not."""
    if not isinstance(value, dict) or set(value) != PREMIUM_FIELDS:
        return f"a private premium is an object with exactly {sorted(PREMIUM_FIELDS)}"
    products = args.get("products")
    sale = (args.get("platform"), args.get("insurer"), products[0] if products else None, args.get("order"),
            args.get("sku"))  # fmt: skip
    if (value["platform"], value["insurer"], value["product"], value["order"], value["sku"]) != sale:
        return "the premium names another platform, insurer, product, order or SKU than the purchase"
    if type(value["premium"]) is not int or not 1 <= value["premium"] <= limits.money_fen_max:
        return f"premium must be an integer of 1..{limits.money_fen_max} fen"
    return ""


PREMIUMS = Collection("premiums", check=check_premium, endorse=True)


class PriceArgs(Args):
    sku: Sku
    price: Money
    mark: rules.Mark = "regular"


class ClaimArgs(Args):
    policy: PolicyId
    event: EventId | None = None  # the pickup (return shipping) or drop-off (local return) event
    # For an event the trace contract anchored compactly (its text is in the capture's transaction, not in
    # state): the event's JSON text, and the capture's context and ignored fields, to recompute its hash id.
    event_text: Annotated[str, msgspec.Meta(max_length=limits.trace_event_bytes_max)] = ""
    context: Annotated[str, msgspec.Meta(max_length=limits.trace_context_bytes_max)] = ""
    ignore: Annotated[list[Annotated[str, msgspec.Meta(max_length=200)]], msgspec.Meta(max_length=32)] = msgspec.field(
        default_factory=list
    )


class PolicyArgs(Args):
    policy: PolicyId


class ReviewArgs(Args):
    policy: PolicyId
    approve: bool


class RecordArgs(Args):
    policy: PolicyId
    transfer: Hex32


class InsurerArgs(Args):
    insurer: OrgId


class PageArgs(Args):
    insurer: OrgId | None = None
    after: Cursor = ""
    limit: PageLimit = rules.page_max


class PricesArgs(Args):
    platform: OrgId
    sku: Sku
    day: Annotated[int, msgspec.Meta(ge=0, le=10**6)]


class ShopperArgs(Args):
    platform: OrgId  # shopper ids are each platform's own
    shopper: ShopperId


class FlagArgs(Args):
    shopper: ShopperId
    reason: Annotated[str, msgspec.Meta(max_length=200)]  # "" clears the flag
    platform: OrgId | None = None  # whose shopper: a platform flags its own; an insurer names the platform


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _bare(value: Any, prefixes: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        return ""
    for p in prefixes:
        if value.startswith(p):
            return value[len(p) :]
    return value


class Cover(Contract):
    name = "cover"
    collections: ClassVar[dict[str, Collection]] = {"premiums": PREMIUMS}

    # ---- parties and records ------------------------------------------------------------------------------
    def _insurer(self, ctx: Context, org: str = "") -> Signer:
        if org:
            return ctx.require_party(org, code=CoverCode.NOT_INSURER, message=f"needs the signature of insurer {org}")
        return ctx.require_party(org_type="insurer", code=CoverCode.NOT_INSURER, message="needs an insurer's signature")

    def _platform(self, ctx: Context) -> Signer:
        return ctx.require_party(
            org_type="platform", code=CoverCode.NOT_PLATFORM, message="needs a platform's signature"
        )

    def _capital(self, ctx: Context, insurer: str) -> Capital:
        return ctx.load(Capital, f"cap/{insurer}") or Capital(insurer=insurer)

    def _save_capital(self, ctx: Context, cap: Capital) -> None:
        # The invariant every transaction keeps; a breach is a bug in this contract, never an outcome.
        if not (cap.reserved >= 0 and cap.owed >= 0 and cap.reserved + cap.owed <= cap.pledged):
            raise InvariantViolation(Code.INTERNAL, f"capital of {cap.insurer} would be inconsistent: {cap.to_value()}")
        ctx.save(f"cap/{cap.insurer}", cap)

    def _policy(self, ctx: Context, pid: str) -> Policy:
        return ctx.must_load(Policy, f"pol/{pid}", f"no policy {pid}")

    # ---- the insurer ---------------------------------------------------------------------------------------
    @transaction
    def pledge_capital(self, ctx: Context, a: AmountArgs) -> Capital:
        """The insurer pledges capital that reserves for its policies' exposure may use."""
        insurer = self._insurer(ctx).org
        cap = self._capital(ctx, insurer)
        cap = cap.replace(pledged=cap.pledged + a.amount)
        self._save_capital(ctx, cap)
        ctx.emit("capital_pledged", {"insurer": insurer, "amount": a.amount, "pledged": cap.pledged})
        return cap

    @transaction
    def release_capital(self, ctx: Context, a: AmountArgs) -> Capital:
        """The insurer takes back capital that no reserve or amount owed needs."""
        insurer = self._insurer(ctx).org
        cap = self._capital(ctx, insurer)
        free = cap.pledged - cap.reserved - cap.owed
        if a.amount > free:
            ctx.fail(CoverCode.CAPITAL_IN_USE, f"{insurer} has {free} fen of capital free, not {a.amount}")
        cap = cap.replace(pledged=cap.pledged - a.amount)
        self._save_capital(ctx, cap)
        ctx.emit("capital_released", {"insurer": insurer, "amount": a.amount, "pledged": cap.pledged})
        return cap

    @transaction
    def publish(self, ctx: Context, a: PublishArgs) -> Product:
        """The insurer publishes a product: its kind, premium and indemnity rules, window and exclusions."""
        insurer = self._insurer(ctx).org
        if ctx.exists(f"prod/{a.id}"):
            ctx.fail(CoverCode.EXISTS, f"a product {a.id} exists")
        if a.base_fen == 0 and a.rate_bps == 0:
            ctx.fail(CoverCode.BAD_RULE, "the premium rule gives no premium (base_fen and rate_bps are both 0)")
        if "regular" in a.exclusions:
            ctx.fail(CoverCode.BAD_RULE, "regular prices cannot be excluded")
        if a.kind != "return_shipping" and (a.loading_bps or a.refuse_ratio_bps):
            ctx.fail(CoverCode.BAD_RULE, "only return shipping is priced by the shopper's claim ratio")
        product = Product(
            id=a.id,
            insurer=insurer,
            kind=a.kind,
            title=a.title,
            base_fen=a.base_fen,
            rate_bps=a.rate_bps,
            loading_bps=a.loading_bps,
            refuse_ratio_bps=a.refuse_ratio_bps,
            indemnity_fen=a.indemnity_fen,
            window_days=a.window_days,
            exclusions=sorted(set(a.exclusions)),
            shopper_returns_max=a.shopper_returns_max,
            active=True,
            published_ms=ctx.time_ms,
            tx=ctx.tx_id,
        )
        ctx.save(f"prod/{a.id}", product)
        ctx.emit("product_published", {"product": a.id, "insurer": insurer, "kind": a.kind})
        return product

    @transaction
    def withdraw(self, ctx: Context, a: ProductArgs) -> None:
        """The insurer stops selling a product (policies already sold keep their cover)."""
        product = ctx.must_load(Product, f"prod/{a.id}", f"no product {a.id}")
        self._insurer(ctx, product.insurer)
        if not product.active:
            ctx.fail(CoverCode.PRODUCT_CLOSED, f"product {a.id} is already withdrawn")
        ctx.save(f"prod/{a.id}", product.replace(active=False))
        ctx.emit("product_withdrawn", {"product": a.id})

    # ---- the platform ----------------------------------------------------------------------------------------
    @transaction
    def post_price(self, ctx: Context, a: PriceArgs) -> dict[str, Any]:
        """The platform's signed price of a SKU now, marked (``regular``, ``flash_sale``, ``coupon``, ...)."""
        platform = self._platform(ctx).org
        day = ctx.time_ms // DAY_MS
        key = f"pday/{platform}/{a.sku}/{day}"
        posts = list(ctx.get(key) or [])
        if len(posts) >= rules.prices_per_sku_day_max:
            ctx.fail(
                Code.LIMIT_EXCEEDED, f"{a.sku} has prices_per_sku_day_max={rules.prices_per_sku_day_max} posts today"
            )
        fact = {"at_ms": ctx.time_ms, "price": a.price, "mark": a.mark, "tx": ctx.tx_id}
        ctx.put(key, [*posts, fact])
        ctx.emit("price", {"platform": platform, "sku": a.sku, **fact})
        return fact

    @transaction
    def buy(self, ctx: Context, a: BuyArgs) -> list[Policy]:
        """The platform buys cover at checkout, one policy per product, bound to the order, SKU and price paid.

        Each policy reserves its exposure against its insurer's pledged capital (``OVER_CAPITAL`` if that
        would take reserves above it)."""
        return self._buy(ctx, a, None)

    @transaction
    def buy_private(self, ctx: Context, a: BuyPrivateArgs) -> list[Policy]:
        """The platform buys one policy at a premium agreed privately with the insurer (collection
        ``premiums``), endorsed by both organisations' peers; the exposure is reserved publicly as in ``buy``."""
        platform = self._platform(ctx).org
        if len(a.products) != 1:
            ctx.fail(Code.INVALID_ARGUMENT, "a private premium covers one product: buy_private names one")
        product = ctx.load(Product, f"prod/{a.products[0]}")
        if product is None:
            ctx.fail(Code.NOT_FOUND, f"no product {a.products[0]}")
        if (a.platform, a.insurer) != (platform, product.insurer):
            ctx.fail(Code.INVALID_ARGUMENT, f"the sale is by {platform} of {product.insurer}'s product")
        if a.private.collection != PREMIUMS.name:
            ctx.fail(PrivacyCode.UNKNOWN_COLLECTION, "private premiums go to collection 'premiums'")
        if ctx.exists(f"~pvt/premiums/{a.private.key}"):
            ctx.fail(Code.ALREADY_EXISTS, f"premium {a.private.key} is already committed")
        require_endorsements(ctx, "buy_private", a, a.endorsements, [platform, product.insurer])
        out = self._buy(ctx, a, a.private)
        put_private(ctx, PREMIUMS, a.private, [platform, product.insurer])
        return out

    def _buy(self, ctx: Context, a: BuyArgs, private: PrivateRef | None) -> list[Policy]:
        platform = self._platform(ctx).org
        if len(set(a.products)) != len(a.products):
            ctx.fail(Code.INVALID_ARGUMENT, "a product is named twice")
        shopper = ctx.load(Shopper, f"shopper/{platform}/{a.shopper}") or Shopper(shopper=a.shopper)
        bound = _digest(f"{platform}\n{a.order}\n{a.sku}")
        out: list[Policy] = []
        for n, pid in enumerate(a.products, start=1):
            product = ctx.load(Product, f"prod/{pid}")
            if product is None:
                ctx.fail(Code.NOT_FOUND, f"no product {pid}")
            if not product.active:
                ctx.fail(CoverCode.PRODUCT_CLOSED, f"product {pid} is withdrawn")
            if ctx.exists(f"bound/{bound}/{pid}"):
                ctx.fail(Code.ALREADY_EXISTS, f"order {a.order} already has {pid} for {a.sku}")
            if product.kind == "return_shipping":
                ratio = rules.claim_ratio_bps(shopper.policies, shopper.claims)
                if product.refuse_ratio_bps and ratio > product.refuse_ratio_bps:
                    ctx.fail(
                        CoverCode.HIGH_RISK,
                        f"shopper {a.shopper} claimed {ratio} bps of return shipping cover, "
                        f"above {product.refuse_ratio_bps} bps",
                    )
            premium = rules.premium_fen(
                product.kind,
                product.base_fen,
                product.rate_bps,
                product.loading_bps,
                a.price_paid,
                shopper.policies,
                shopper.claims,
            )
            if private is not None:  # agreed privately: the amount stays out of the public premium book
                premium = 0
            elif premium < 1:  # a rate-only rule rounds to 0 on a cheap order: free cover, capital reserved for nothing
                ctx.fail(CoverCode.BAD_RULE, f"{pid} gives no premium for a price of {a.price_paid} fen")
            if premium > limits.money_fen_max:  # a loaded premium is still one amount of money
                ctx.fail(Code.LIMIT_EXCEEDED, f"the premium of {pid} would be {premium} fen, above money_fen_max")
            exposure = rules.exposure_fen(product.kind, product.indemnity_fen, a.price_paid)
            cap = self._capital(ctx, product.insurer)
            if cap.reserved + cap.owed + exposure > cap.pledged:
                ctx.fail(
                    CoverCode.OVER_CAPITAL,
                    f"{product.insurer} has {cap.pledged - cap.reserved - cap.owed} fen of capital free, "
                    f"the policy needs {exposure}",
                )
            self._save_capital(
                ctx,
                cap.replace(
                    reserved=cap.reserved + exposure, premiums_due=cap.premiums_due + premium, policies=cap.policies + 1
                ),
            )
            policy = Policy(
                id=f"P{ctx.tx_id}.{n}",
                product=pid,
                insurer=product.insurer,
                kind=product.kind,
                platform=platform,
                shopper=a.shopper,
                order=a.order,
                sku=a.sku,
                price_paid=a.price_paid,
                premium=premium,
                exposure=exposure,
                address=a.address,
                device=a.device,
                bought_ms=ctx.time_ms,
                height=ctx.height,
                window_end_ms=ctx.time_ms + product.window_days * DAY_MS,
                status="active",
                premium_transfer="",
                tx=ctx.tx_id,
                premium_terms=msgspec.UNSET if private is None else private.key,
            )
            ctx.save(f"pol/{policy.id}", policy)
            ctx.put(f"bound/{bound}/{pid}", policy.id)
            if private is None:
                ctx.put(f"pdue/{product.insurer}/{policy.id}", premium)
            if product.kind == "return_shipping":
                shopper = shopper.replace(policies=shopper.policies + 1)
            ctx.emit(
                "policy_bought",
                {
                    "policy": policy.id,
                    "insurer": policy.insurer,
                    "platform": platform,
                    "shopper": a.shopper,
                    "kind": policy.kind,
                    **({"premium": premium} if private is None else {"premium_terms": private.hash}),
                    "exposure": exposure,
                    "transfer": rules.transfer_id("premium", policy.id),
                },
            )
            out.append(policy)
        ctx.save(f"shopper/{platform}/{a.shopper}", shopper)
        self._seen(ctx, f"dev/{_digest(a.device)}", f"{platform}/{a.shopper}")
        self._seen(ctx, f"addr/{_digest(index_form(a.address))}", f"{platform}/{a.shopper}")
        return out

    def _seen(self, ctx: Context, key: str, shopper: str) -> None:
        seen = ctx.load(Seen, key) or Seen(shoppers=[])
        if shopper not in seen.shoppers and len(seen.shoppers) < rules.shared_accounts_max:
            ctx.save(key, Seen(shoppers=sorted([*seen.shoppers, shopper])))

    # ---- claims ----------------------------------------------------------------------------------------------
    @transaction
    def claim(self, ctx: Context, a: ClaimArgs) -> Claim:
        """Claim on a policy; the contract decides from the ledger's facts alone, once (see the module notes)."""
        filer = ctx.require_party()  # anyone of the consortium may file a return claim: the facts decide
        pol = self._policy(ctx, a.policy)
        if pol.kind == "price_protection" and filer.org != pol.platform:
            # A claim is decided once, with the lowest price so far: whoever files chooses that moment, so only
            # the platform acting for the shopper may (an insurer filing at a 1-fen dip would lock the refund).
            ctx.fail(CoverCode.NOT_PLATFORM, f"price protection of {pol.id} is claimed by platform {pol.platform}")
        if ctx.exists(f"claim/{pol.id}"):
            ctx.fail(CoverCode.ALREADY_CLAIMED, f"policy {pol.id} was already claimed")
        if pol.status != "active" or ctx.time_ms > pol.window_end_ms:
            ctx.fail(CoverCode.AFTER_WINDOW, f"policy {pol.id}'s window closed at {pol.window_end_ms}")
        product = ctx.must_load(Product, f"prod/{pol.product}", f"no product {pol.product}")
        if pol.kind == "price_protection":
            amount, rule, found = self._price_drop(ctx, pol, product)
        else:
            amount, rule, found = self._return_fact(ctx, pol, product, a.event, a.event_text, a.context, a.ignore)
        held = self._bulk(ctx, pol)
        claim = Claim(
            policy=pol.id,
            status="held" if held else "approved",
            amount=amount,
            rule=rule,
            facts=found,
            held=held,
            filed_ms=ctx.time_ms,
            by=filer.member_id,
            tx=ctx.tx_id,
        )
        ctx.save(f"claim/{pol.id}", claim)
        if held:
            ctx.save(f"pol/{pol.id}", pol.replace(status="held"))
            ctx.emit("claim_held", {"policy": pol.id, "insurer": pol.insurer, "amount": amount, "reason": held})
        else:
            self._approve(ctx, pol, claim)
        return claim

    def _price_drop(
        self, ctx: Context, pol: Policy, product: Product
    ) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        end = min(ctx.time_ms, pol.window_end_ms)
        best: dict[str, Any] | None = None
        best_excluded: dict[str, Any] | None = None
        for day in range(pol.bought_ms // DAY_MS, end // DAY_MS + 1):
            for post in ctx.get(f"pday/{pol.platform}/{pol.sku}/{day}") or []:
                if not pol.bought_ms <= int(post["at_ms"]) <= end:
                    continue
                fact = {"fact": "price", "platform": pol.platform, "sku": pol.sku, **post}
                if post["mark"] in product.exclusions:
                    if best_excluded is None or post["price"] < best_excluded["price"]:
                        best_excluded = fact
                elif best is None or post["price"] < best["price"]:
                    best = fact
        rule = {
            "kind": "price_protection",
            "refund": "price_paid - lowest regular price of the SKU from purchase to claim, within the window, "
            "at most the exposure",
            "price_paid": pol.price_paid,
            "exposure": pol.exposure,
            "window_end_ms": pol.window_end_ms,
            "exclusions": product.exclusions,
        }
        if best is not None and best["price"] < pol.price_paid:
            refund = rules.refund_fen(pol.price_paid, int(best["price"]), pol.exposure)
            return refund, {**rule, "lowest_regular": best["price"]}, [best]
        if best_excluded is not None and best_excluded["price"] < pol.price_paid:
            ctx.fail(
                CoverCode.EXCLUDED_PRICE,
                f"{pol.sku} was only cheaper at a {best_excluded['mark']} price, which {pol.product} excludes",
            )
        ctx.fail(CoverCode.NO_FACT, f"no regular price of {pol.sku} below {pol.price_paid} since the purchase")

    def _return_fact(
        self,
        ctx: Context,
        pol: Policy,
        product: Product,
        event_id: str | None,
        text: str,
        context: str,
        ignore: list[str],
    ) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        pickup = pol.kind == "return_shipping"
        step, recorders = ("shipping", rules.PICKUP_RECORDERS) if pickup else ("receiving", rules.DROPOFF_RECORDERS)
        what = "the courier's pickup" if pickup else "the warehouse's drop-off"
        if event_id is None:
            ctx.fail(CoverCode.NO_FACT, f"a {pol.kind} claim names {what} event (event)")
        hx = event_id[len("ni:///sha-256;") :][:64]
        anchored = self._anchored(ctx, hx, event_id, text, context, ignore)
        if ctx.exists(f"used/{hx}"):
            ctx.fail(CoverCode.FACT_USED, f"event {event_id} already decided a claim")
        org = ctx.consortium().orgs.get(anchored["org"])
        org_type = str(org.type) if org is not None else ""
        if org_type not in recorders:
            ctx.fail(CoverCode.WRONG_FACT, f"{what} is recorded by a {' or '.join(recorders)}, not a {org_type or '?'}")
        event = anchored["event"]
        try:
            f = event_facts(event)
        except Exception:  # anchored events were checked when captured; one that no longer reads proves nothing
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} cannot be read")
        if f.biz_step != step:
            ctx.fail(CoverCode.WRONG_FACT, f"{what} is a {step} event, not {f.biz_step or '(no bizStep)'}")
        txs = event.get("bizTransactionList") or []
        kinds = {(_bare(t.get("type"), _BTT), t.get("bizTransaction")) for t in txs if isinstance(t, dict)}
        if ("po", pol.order) not in kinds:
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} does not name order {pol.order} (a po transaction)")
        rma = sorted(str(v) for k, v in kinds if k == "rma")
        if not rma:
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} names no return (an rma transaction)")
        if anchored["height"] < pol.height or f.time_ms < pol.bought_ms:
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} happened before the policy was bought")
        if f.time_ms > pol.window_end_ms:
            ctx.fail(CoverCode.AFTER_WINDOW, f"{what} happened after the window closed")
        if f.time_ms > ctx.time_ms + rules.fact_ahead_ms_max:  # booked, not made: it cannot have been proven yet
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} is dated after the ledger's time: it has not happened")
        if "errorDeclaration" in event:  # its recorder declared it wrong (the hash id leaves the declaration out)
            ctx.fail(CoverCode.WRONG_FACT, f"event {event_id} carries an error declaration")
        if pickup:
            places = {p for w, p in f.places if w == "readPoint"}
            for s in event.get("sourceList") or []:
                if (
                    isinstance(s, dict)
                    and _bare(s.get("type"), _SDT) == "location"
                    and isinstance(s.get("source"), str)
                ):
                    places.add(index_form(s["source"]))
            if index_form(pol.address) not in places:
                ctx.fail(CoverCode.ADDRESS_MISMATCH, f"the pickup was not at the order's address {pol.address}")
        shopper = ctx.load(Shopper, f"shopper/{pol.platform}/{pol.shopper}") or Shopper(shopper=pol.shopper)
        since = ctx.time_ms - rules.RETURN_PERIOD_DAYS * DAY_MS
        recent = [t for t in shopper.returns if t > since]
        if len(recent) >= product.shopper_returns_max:
            ctx.fail(
                CoverCode.TOO_FREQUENT,
                f"shopper {pol.shopper} made {len(recent)} return claims in {rules.RETURN_PERIOD_DAYS} days "
                f"(at most {product.shopper_returns_max})",
            )
        recent = [*recent, ctx.time_ms][-rules.shopper_returns_max_max :]
        shopper = shopper.replace(returns=recent, claims=shopper.claims + (1 if pickup else 0))
        ctx.save(f"shopper/{pol.platform}/{pol.shopper}", shopper)
        ctx.put(f"used/{hx}", pol.id)
        fact = {
            "fact": "epcis",
            "event": event_id,
            "bizStep": step,
            "org": anchored["org"],
            "by": anchored["by"],
            "time_ms": f.time_ms,
            "tx": anchored["tx"],
            "order": pol.order,
            "rma": rma[0],
        }
        rule = {
            "kind": pol.kind,
            "pays": f"the indemnity once {what} of the order is anchored within the window",
            "indemnity": pol.exposure,
            "window_end_ms": pol.window_end_ms,
            "address": pol.address if pickup else "",
        }
        return pol.exposure, rule, [fact]

    def _anchored(
        self, ctx: Context, hx: str, event_id: str, text: str, context: str, ignore: list[str]
    ) -> dict[str, Any]:
        """The event anchored by the ``trace`` contract under ``hx``: its JSON, who recorded it, in which tx and height.

        The trace contract keeps either the whole record (text, context, org) or, for a compact capture, only
        a reference to the transaction that carried the text, which a contract cannot read. Then the claim
        carries the text (and the capture's context and ignored fields) and this contract recomputes the CBV
        2.0 hash id: text that is not the anchored event's cannot match it."""
        stored = ctx.read(f"trace/e/{hx}")  # read as a plain value: the layout depends on how it was captured
        if not isinstance(stored, dict):
            ctx.fail(CoverCode.NO_FACT, f"no event {event_id} is anchored by the trace contract")
        if isinstance(stored.get("event"), str):
            text, context, ignore = stored["event"], str(stored.get("context") or ""), list(stored.get("ignore") or [])
            org = str(stored.get("org") or "")
        elif not text:
            ctx.fail(
                CoverCode.NO_FACT, f"event {event_id} is anchored compactly: the claim carries its text (event_text)"
            )
        else:
            org = org_of(str(stored.get("by") or ""))
        try:
            check_json(context, "the context")
            check_json(text, "the event")
            hasher = Hasher(_decoder.decode(context) if context else None, ignore)
            event = _decoder.decode(text)
            computed = hash_of_prehash(hasher.event(event, checked=True))
        except (RecursionError, MemoryError):
            raise
        except Exception:  # too deep, not JSON, not an event: it cannot be the anchored one
            ctx.fail(CoverCode.WRONG_FACT, f"the text given for {event_id} is not an EPCIS event")
        if computed[len("ni:///sha-256;") :][:64] != hx or not isinstance(event, dict):
            ctx.fail(CoverCode.WRONG_FACT, f"the text given is not the event anchored as {event_id}")
        return {"event": event, "org": org, "by": str(stored.get("by") or ""), "tx": str(stored.get("tx") or ""),
                "height": int(stored.get("height") or 0)}  # fmt: skip

    def _bulk(self, ctx: Context, pol: Policy) -> str:
        """Why the claim waits for review ("" if it does not): a flagged shopper, accounts sharing the device or
        the address."""
        shopper = ctx.load(Shopper, f"shopper/{pol.platform}/{pol.shopper}")
        reasons = (
            [] if shopper is None else [r for o, r in sorted(shopper.flags.items()) if o in (pol.platform, pol.insurer)]
        )
        if reasons:
            return f"shopper flagged: {'; '.join(reasons)}"
        device = ctx.load(Seen, f"dev/{_digest(pol.device)}")
        if device is not None and len(device.shoppers) > rules.shared_device_accounts_max:
            return f"{len(device.shoppers)} accounts bought cover from one device"
        address = ctx.load(Seen, f"addr/{_digest(index_form(pol.address))}")
        if address is not None and len(address.shoppers) > rules.shared_address_accounts_max:
            return f"{len(address.shoppers)} accounts bought cover for one address"
        return ""

    def _approve(self, ctx: Context, pol: Policy, claim: Claim) -> None:
        cap = self._capital(ctx, pol.insurer)
        self._save_capital(ctx, cap.replace(reserved=cap.reserved - pol.exposure, owed=cap.owed + claim.amount))
        ctx.save(f"claim/{pol.id}", claim.replace(status="approved"))
        ctx.save(f"pol/{pol.id}", pol.replace(status="approved"))
        ctx.put(f"due/{pol.insurer}/{pol.id}", claim.amount)
        ctx.emit(
            "claim_approved",
            {
                "policy": pol.id,
                "insurer": pol.insurer,
                "shopper": pol.shopper,
                "kind": pol.kind,
                "amount": claim.amount,
                "transfer": rules.transfer_id("payout", pol.id),
            },
        )

    @transaction
    def flag(self, ctx: Context, a: FlagArgs) -> Shopper:
        """An insurer or platform flags a shopper (a risk engine's verdict): their claims are held for review
        until the flag is cleared (``reason`` "")."""
        by = ctx.require_party(
            org_type=("insurer", "platform"),
            code=CoverCode.NOT_INSURER,
            message="needs an insurer's or platform's signature",
        )
        platform = a.platform or by.org
        if by.org_type == "platform" and platform != by.org:
            ctx.fail(Code.INVALID_ARGUMENT, f"a platform flags its own shoppers, not {platform}'s")
        org = ctx.consortium().orgs.get(platform)
        if org is None or str(org.type) != "platform":
            ctx.fail(Code.INVALID_ARGUMENT, f"{platform} is not a platform: name the platform whose shopper it is")
        key = f"shopper/{platform}/{a.shopper}"
        shopper = ctx.load(Shopper, key) or Shopper(shopper=a.shopper)
        flags = {o: r for o, r in shopper.flags.items() if o != by.org}
        if a.reason:
            flags[by.org] = a.reason
        shopper = shopper.replace(flags=flags)
        ctx.save(key, shopper)
        ctx.emit(
            "shopper_flagged",
            {"platform": platform, "shopper": a.shopper, "reason": a.reason, "by": by.member_id},
        )
        return shopper

    @transaction
    def review(self, ctx: Context, a: ReviewArgs) -> Claim:
        """The insurer decides a claim held for review: approve (as decided) or reject (the reserve is freed)."""
        pol = self._policy(ctx, a.policy)
        reviewer = self._insurer(ctx, pol.insurer)
        claim = ctx.load(Claim, f"claim/{pol.id}")
        if claim is None or claim.status != "held":
            ctx.fail(CoverCode.NOT_HELD, f"policy {pol.id} has no claim held for review")
        claim = claim.replace(reviewed_by=reviewer.member_id)
        if a.approve:
            self._approve(ctx, pol, claim)
            return claim.replace(status="approved")
        cap = self._capital(ctx, pol.insurer)
        self._save_capital(ctx, cap.replace(reserved=cap.reserved - pol.exposure))
        ctx.save(f"claim/{pol.id}", claim.replace(status="rejected"))
        ctx.save(f"pol/{pol.id}", pol.replace(status="rejected"))
        ctx.emit("claim_rejected", {"policy": pol.id, "insurer": pol.insurer})
        return claim.replace(status="rejected")

    @transaction
    def expire(self, ctx: Context, a: PolicyArgs) -> Policy:
        """Anyone closes a policy whose window passed without a claim; its reserve is freed."""
        ctx.require_party()
        pol = self._policy(ctx, a.policy)
        if pol.status != "active":
            ctx.fail(CoverCode.ALREADY_CLAIMED, f"policy {pol.id} is {pol.status}")
        if ctx.time_ms <= pol.window_end_ms:
            ctx.fail(CoverCode.NOT_EXPIRED, f"policy {pol.id}'s window is open until {pol.window_end_ms}")
        cap = self._capital(ctx, pol.insurer)
        self._save_capital(ctx, cap.replace(reserved=cap.reserved - pol.exposure))
        pol = pol.replace(status="expired")
        ctx.save(f"pol/{pol.id}", pol)
        ctx.emit("policy_expired", {"policy": pol.id, "insurer": pol.insurer})
        return pol

    # ---- payments recorded back (the payout adapter) ---------------------------------------------------------
    @transaction
    def record_payout(self, ctx: Context, a: RecordArgs) -> Claim:
        """The insurer records the payments-core transfer that paid an approved claim (once)."""
        pol = self._policy(ctx, a.policy)
        self._insurer(ctx, pol.insurer)
        claim = ctx.load(Claim, f"claim/{pol.id}")
        if claim is not None and claim.status == "paid":
            ctx.fail(CoverCode.ALREADY_PAID, f"the payout of {pol.id} is recorded (transfer {claim.transfer})")
        if claim is None or claim.status != "approved":
            ctx.fail(CoverCode.NOT_OWED, f"policy {pol.id} has no approved claim")
        if a.transfer not in rules.transfer_ids("payout", pol.id):
            ctx.fail(
                CoverCode.WRONG_TRANSFER,
                f"the payout of {pol.id} is transfer {rules.transfer_id('payout', pol.id)} (or a retry derived from it)",
            )
        cap = self._capital(ctx, pol.insurer)
        self._save_capital(
            ctx,
            cap.replace(owed=cap.owed - claim.amount, pledged=cap.pledged - claim.amount, paid=cap.paid + claim.amount),
        )
        claim = claim.replace(status="paid", transfer=a.transfer, paid_ms=ctx.time_ms, paid_tx=ctx.tx_id)
        ctx.save(f"claim/{pol.id}", claim)
        ctx.save(f"pol/{pol.id}", pol.replace(status="paid"))
        ctx.delete(f"due/{pol.insurer}/{pol.id}")
        ctx.emit(
            "claim_paid", {"policy": pol.id, "insurer": pol.insurer, "amount": claim.amount, "transfer": a.transfer}
        )
        return claim

    @transaction
    def record_premium(self, ctx: Context, a: RecordArgs) -> Policy:
        """The insurer records the payments-core transfer that collected a policy's premium (once)."""
        pol = self._policy(ctx, a.policy)
        self._insurer(ctx, pol.insurer)
        if pol.premium_transfer:
            ctx.fail(CoverCode.ALREADY_PAID, f"the premium of {pol.id} is recorded (transfer {pol.premium_transfer})")
        if a.transfer not in rules.transfer_ids("premium", pol.id):
            ctx.fail(
                CoverCode.WRONG_TRANSFER,
                f"the premium of {pol.id} is transfer {rules.transfer_id('premium', pol.id)} (or a retry derived from it)",
            )
        cap = self._capital(ctx, pol.insurer)
        self._save_capital(
            ctx, cap.replace(premiums_due=cap.premiums_due - pol.premium, premiums=cap.premiums + pol.premium)
        )
        pol = pol.replace(premium_transfer=a.transfer)
        ctx.save(f"pol/{pol.id}", pol)
        ctx.delete(f"pdue/{pol.insurer}/{pol.id}")
        ctx.emit(
            "premium_collected",
            {"policy": pol.id, "insurer": pol.insurer, "amount": pol.premium, "transfer": a.transfer},
        )
        return pol

    # ---- reads -----------------------------------------------------------------------------------------------
    @query
    def product(self, ctx: Context, a: ProductArgs) -> Product:
        return ctx.must_load(Product, f"prod/{a.id}", f"no product {a.id}")

    @query
    def products(self, ctx: Context, a: PageArgs) -> dict[str, Any]:
        """Products (of one insurer, if named), by id, a page at a time (``next`` continues)."""
        items: list[Product] = []
        for key, p in ctx.range("prod/", Product):
            if key <= f"prod/{a.after}" and a.after:
                continue
            if a.insurer and p.insurer != a.insurer:
                continue
            if len(items) == a.limit:
                return {"products": items, "next": items[-1].id}
            items.append(p)
        return {"products": items, "next": ""}

    @query
    def capital(self, ctx: Context, a: InsurerArgs) -> dict[str, Any]:
        cap = self._capital(ctx, a.insurer)
        return {**cap.to_value(), "free": cap.pledged - cap.reserved - cap.owed}

    @query
    def policy(self, ctx: Context, a: PolicyArgs) -> dict[str, Any]:
        """A policy with its product, its claim (the rule and facts that decided it) and its payout."""
        pol = self._policy(ctx, a.policy)
        claim = ctx.load(Claim, f"claim/{pol.id}")
        return {
            "policy": pol,
            "product": ctx.load(Product, f"prod/{pol.product}"),
            "claim": claim,
            "payout": None
            if claim is None
            else {
                "transfer": claim.transfer or rules.transfer_id("payout", pol.id),
                "amount": claim.amount,
                "paid": claim.status == "paid",
                "paid_tx": claim.paid_tx,
            },
            "premium": {
                "amount": None if isinstance(pol.premium_terms, str) else pol.premium,  # private: the members'
                **({"private": pol.premium_terms} if isinstance(pol.premium_terms, str) else {}),
                "transfer": pol.premium_transfer or rules.transfer_id("premium", pol.id),
                "collected": bool(pol.premium_transfer),
            },
        }

    @query
    def due(self, ctx: Context, a: InsurerArgs) -> dict[str, Any]:
        """What an insurer's adapter has still to settle: approved payouts and premiums, by policy."""
        payouts = [{"policy": k.rsplit("/", 1)[1], "amount": v} for k, v in ctx.range(f"due/{a.insurer}/")]
        premiums = [{"policy": k.rsplit("/", 1)[1], "amount": v} for k, v in ctx.range(f"pdue/{a.insurer}/")]
        return {"payouts": payouts[: rules.page_max], "premiums": premiums[: rules.page_max]}

    @query
    def prices(self, ctx: Context, a: PricesArgs) -> list[Any]:
        """A platform's price posts of a SKU on one day (days since 1970-01-01, UTC)."""
        return list(ctx.get(f"pday/{a.platform}/{a.sku}/{a.day}") or [])

    @query
    def shopper(self, ctx: Context, a: ShopperArgs) -> Shopper:
        return ctx.load(Shopper, f"shopper/{a.platform}/{a.shopper}") or Shopper(shopper=a.shopper)


__all__ = ["Claim", "Cover", "CoverCode", "Policy", "Product"]
