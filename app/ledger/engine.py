"""Set-based posting: any number of postings in one database transaction, in a fixed number
of statements. Single requests reach it through the group-commit batcher (batcher.py), offline
uploads through POST /v1/batches.

The order of work for a group:
  1. auth: resolve every API key (one statement);
  2. claim every Idempotency-Key (one statement); fetch the stored answers of keys already used;
  3. load the context of every posting, locking the card accounts involved in id order (one
     statement), and apply the rules (rules.py); release the lapsed holds of the cards that
     have holds (two more, only then);
  4. for the purchases that earn: read the cards' tier, spend and first purchase, and lock
     the budgeted campaigns (earning.py: one statement each, only when they matter);
  5. in request order, add each purchase's tier and campaign bonuses, check each posting
     against its card's balance as left by the postings before it, and compute the new
     balances, tiers and budgets;
  6. write balances, transactions, entries, what each rule earned, qualifying spend, tier
     moves, campaign budgets and answers (one statement).
The caller commits. Refusals are answers like any other: they are stored with their key.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from app.auth.deps import Principal
from app.cards.errors import CardClosed
from app.core.config import Settings
from app.core.errors import AmountOutOfRange, AppError, Unauthorized
from app.core.ids import uuid7
from app.core.jsonio import dumps
from app.expiry.service import expire_due
from app.holds.expiry import release_lapsed
from app.idempotency.errors import IdempotencyKeyReused
from app.ledger import earning
from app.ledger import hot_repository as repository
from app.ledger.earning import Standing
from app.ledger.errors import DuplicateReference, InsufficientBalance
from app.ledger.rules import (
    Intent,
    Plan,
    PostingRequest,
    answer_for,
    card_closed,
    defer_points,
    intent_for,
    plan_for,
)
from app.ledger.schemas import RedemptionCreate
from app.models.enums import ApiKeyRole, Asset, TransactionType
from app.pending.service import release_matured
from app.programs.service import ProgramContext

MAX_BALANCE = 2**63 - 1


class RetryGroup(Exception):
    """The database refused the group for a reason that a rerun resolves (a receipt reference
    committed by another request meanwhile, a deadlock). Nothing was written."""


@dataclass
class GroupItem:
    request: PostingRequest
    key_hash: bytes
    idempotency_key: str | None = None
    fingerprint: bytes | None = None


@dataclass
class Outcome:
    status: int
    rendered: bytes | None = None
    replayed: bool = False
    posted: bool = False
    problem: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    """The answer as data (batches embed it in their own answer)."""

    @property
    def body(self) -> bytes:
        """The answer's JSON, rendered when first asked for (a batch never asks per item)."""
        if self.rendered is None:
            self.rendered = dumps(self.payload)
        return self.rendered


@dataclass
class _State:
    item: GroupItem
    principal: Principal | None = None
    claim: tuple[uuid.UUID, str] | None = None
    same_key_as: int | None = None
    intent: Intent | None = None
    plan: Plan | None = None
    outcome: Outcome | None = None


def accepted(status: int, answer: dict[str, Any], posted: bool) -> Outcome:
    return Outcome(status, posted=posted, payload=answer)


def refusal(exc: AppError) -> Outcome:
    problem = exc.problem()
    return Outcome(status=exc.status, rendered=dumps(problem), problem=problem, headers=exc.headers)


_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


async def post_group(
    conn: asyncpg.Connection,
    program: ProgramContext,
    settings: Settings,
    items: Sequence[GroupItem],
    *,
    atomic: bool = False,
    dry_run: bool = False,
) -> list[Outcome]:
    """`dry_run`: apply the rules and answer, but write nothing of the postings (a preview;
    the caller rolls the transaction back, with any lapsed holds it released)."""
    try:
        return await _post_group(conn, program, settings, items, atomic, dry_run)
    except _RETRYABLE as exc:
        # A receipt reference committed by another request after our context read, or a
        # deadlock: the caller rolls back and reruns the group.
        raise RetryGroup(str(exc)) from exc


async def _post_group(
    conn: asyncpg.Connection,
    program: ProgramContext,
    settings: Settings,
    items: Sequence[GroupItem],
    atomic: bool,
    dry_run: bool,
) -> list[Outcome]:
    states = [_State(item) for item in items]
    await _authenticate_and_claim(conn, program, states)

    to_plan = [s for s in states if s.outcome is None and s.same_key_as is None]
    for state in to_plan:
        assert state.principal is not None
        try:
            state.intent = intent_for(state.item.request, state.principal, program, settings)
        except AppError as exc:
            state.outcome = refusal(exc)
    balances, now, standing = await _plan(
        conn, program, [s for s in to_plan if s.intent is not None]
    )

    planned = [s for s in states if s.plan is not None]
    postings = _apply(program, planned, balances, now, standing)

    if atomic and any(s.outcome is not None and s.outcome.status >= 400 for s in states):
        return [_not_posted_if_atomic(s) for s in states]
    if dry_run:
        return [s.outcome for s in states if s.outcome is not None]

    answers = []
    for state in states:
        if state.same_key_as is not None:
            state.outcome = _same_key_outcome(state, states[state.same_key_as])
        assert state.outcome is not None
        if state.claim is not None:
            answers.append((*state.claim, state.outcome.status, state.outcome.body))
    standing = standing or Standing(program, None, [], {}, {})
    if postings.transactions or answers or standing.spend:
        granted = await repository.write(
            conn,
            program.id,
            postings.balances,
            postings.transactions,
            postings.entries,
            answers,
            postings.earnings,
            [(card, month, amount) for (card, month), amount in standing.spend.items()],
            [
                (card, standing.tiers.get(card), card in postings.first_purchases)
                for card in sorted(set(standing.tiers) | postings.first_purchases)
            ],
            list(standing.grants.items()),
            [(campaign, card, n) for (campaign, card), n in standing.stamped.items()],
            [(card, day, amount, starts) for (card, day, starts), amount in postings.lots.items()],
            settings.points_expiry_months,
            postings.pending,
            postings.waiting,
        )
        if granted != len(standing.grants):
            # A campaign this group granted ended while it ran (its end committed after our
            # snapshot): rerun the group, which will no longer see it.
            raise RetryGroup("a campaign ended while the group ran")
    return [s.outcome for s in states if s.outcome is not None]


async def _authenticate_and_claim(
    conn: asyncpg.Connection, program: ProgramContext, states: list[_State]
) -> None:
    """Resolve every API key and claim every Idempotency-Key, in one statement; then fetch
    the stored answers of the keys that were used before."""
    first_with_key: dict[tuple[bytes, str], int] = {}
    wanted: list[tuple[bytes, str, bytes]] = []
    for index, state in enumerate(states):
        key = state.item.idempotency_key
        if key is None:
            continue
        scoped = (state.item.key_hash, key)
        if scoped in first_with_key:
            state.same_key_as = first_with_key[scoped]
            continue
        first_with_key[scoped] = index
        assert state.item.fingerprint is not None
        wanted.append((*scoped, state.item.fingerprint))
    hashes = sorted({s.item.key_hash for s in states})
    keys = await repository.auth_and_claim(conn, hashes, program.id, wanted)

    taken: list[_State] = []
    for state in states:
        row = keys.get(state.item.key_hash)
        if row is None:
            state.outcome = refusal(Unauthorized("The API key is unknown or revoked."))
            state.same_key_as = None
            continue
        state.principal = Principal(
            api_key_id=row["id"], role=ApiKeyRole(row["role"]), partner_id=row["partner_id"]
        )
        key = state.item.idempotency_key
        if key is None or state.same_key_as is not None:
            continue
        state.claim = (row["id"], key)
        if key not in row["claimed_keys"]:
            taken.append(state)
    if not taken:
        return
    stored = await repository.answers(conn, [s.claim for s in taken if s.claim is not None])
    for state in taken:
        assert state.claim is not None
        record = stored[state.claim]
        state.claim = None
        if record["request_hash"] != state.item.fingerprint:
            state.outcome = refusal(_key_reused())
        else:
            state.outcome = Outcome(
                record["response_status"], bytes(record["response_body"]), replayed=True
            )


def _key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        "The same Idempotency-Key was sent before with a different body or path; "
        "use a new key for a new request."
    )


def _same_key_outcome(state: _State, first: _State) -> Outcome:
    """A duplicate of an earlier request in the same group (a till retrying at once)."""
    assert first.outcome is not None
    if state.item.fingerprint != first.item.fingerprint:
        return refusal(_key_reused())
    return Outcome(first.outcome.status, first.outcome.body, replayed=True)


async def _plan(
    conn: asyncpg.Connection, program: ProgramContext, states: list[_State]
) -> tuple[dict[int, int], datetime | None, Standing | None]:
    """Load every posting's context and lock its card's accounts (one statement), apply the
    rules; return the locked balances, the transaction's time and, when the group has
    purchases that earn, the standing of their cards and of the campaigns (earning.py)."""
    if not states:
        return {}, None, None
    rows = []
    for index, state in enumerate(states):
        intent = state.intent
        assert intent is not None
        rows.append(
            (
                index,
                intent.card_number,
                intent.partner_id,
                intent.counter_kind.value,
                intent.type.value,
                intent.reference,
                intent.occurred_at,
            )
        )
    context, balances, now = await repository.context_and_lock(
        conn, program.id, program.timezone, rows
    )
    with_holds = {ctx["card_id"] for ctx in context.values() if ctx["card_has_holds"]}
    if with_holds:
        # A lapsed hold no longer counts: release it before the card's postings are checked.
        _, gained = await release_lapsed(conn, program, sorted(with_holds))
        for account, amount in gained.items():
            balances[account] += amount
    with_matured = {ctx["card_id"] for ctx in context.values() if ctx["card_pending_matured"]}
    if with_matured:
        # Points whose return window passed are spendable: release them first.
        for account, amount in (await release_matured(conn, program, sorted(with_matured))).items():
            balances[account] += amount
    with_due = {ctx["card_id"] for ctx in context.values() if ctx["card_expiry_due"]}
    if with_due:
        # Expired points no longer count either: expire them before anything spends them.
        for account, amount in (await expire_due(conn, program, sorted(with_due))).items():
            balances[account] += amount
    closed: list[tuple[_State, int]] = []
    for index, state in enumerate(states):
        assert state.intent is not None
        ctx = context[index]
        try:
            state.plan = plan_for(state.intent, state.item.request, ctx, program)
        except CardClosed:
            closed.append((state, ctx["card_id"]))
        except AppError as exc:
            state.outcome = refusal(exc)
    if closed:
        found = await repository.successors(conn, [card_id for _, card_id in closed])
        for state, card_id in closed:
            state.outcome = refusal(card_closed(found.get(card_id)))
    plans = [s.plan for s in states if s.plan is not None]
    return balances, now, await earning.load(conn, program, plans, context)


@dataclass
class _Postings:
    balances: dict[int, int] = field(default_factory=dict)
    transactions: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[tuple[uuid.UUID, int, str, int]] = field(default_factory=list)
    earnings: list[tuple[Any, ...]] = field(default_factory=list)
    lots: dict[tuple[int, date, date], int] = field(default_factory=dict)
    """(card id, day earned, day spendable, in the program's time zone) -> points earned"""
    pending: dict[int, int] = field(default_factory=dict)
    """card points account id -> points gone to wait out a return window"""
    waiting: list[tuple[Any, ...]] = field(default_factory=list)
    """pending_points rows: (accrual id, card id, card account id, points, spendable_at)"""
    first_purchases: set[int] = field(default_factory=set)
    """Referred cards whose first purchase this group posts."""
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    """The program's time zone (the day points are earned on)."""


def _apply(
    program: ProgramContext,
    planned: list[_State],
    balances: dict[int, int],
    now: datetime | None,
    standing: Standing | None,
) -> _Postings:
    """Check each plan against its card's balance, in request order, and collect the writes."""
    zone = ZoneInfo(program.timezone)
    postings = _Postings(zone=zone)
    references: dict[tuple[Any, ...], uuid.UUID] = {}
    for state in planned:
        plan = state.plan
        assert plan is not None and now is not None and state.principal is not None
        intent = plan.intent
        ref_key = (intent.partner_id, intent.type, intent.reference)
        if intent.reference is not None and ref_key in references:
            state.outcome = refusal(
                DuplicateReference(
                    f"Reference {intent.reference!r} was already posted.",
                    transaction_id=str(references[ref_key]),
                )
            )
            continue
        occurred_at = intent.occurred_at or now
        earned = None
        if standing is not None and plan.eligible:
            earned = standing.earn(plan, occurred_at)
        elif standing is not None and plan.eligible == 0:
            standing.show_tier(plan)
        defer_points(plan, program, occurred_at, now)
        card_legs = [leg for leg in plan.legs[::2] if leg[0] in balances]
        new: dict[int, int] = {}
        for account, _, amount in card_legs:
            new[account] = new.get(account, balances[account]) + amount
        # Only a debit can be short: a card in clawback debt still earns (paying the debt off).
        short = [(a, asset) for a, asset, amount in card_legs if amount < 0 and new[a] < 0]
        if short:
            account, asset = short[0]
            request = plan.request
            assert isinstance(request, RedemptionCreate)
            held = balances[account]
            state.outcome = refusal(
                InsufficientBalance(
                    f"The card holds {held} {asset}; {request.amount} were asked for."
                    if held >= 0
                    else f"The card owes {-held} {asset} taken back by a return (clawback "
                    "debt): it spends nothing until earnings pay that off.",
                    asset=asset,
                    available=held,
                    requested=request.amount,
                )
            )
            continue
        if any(value > MAX_BALANCE for value in new.values()):
            state.outcome = refusal(AmountOutOfRange())
            continue
        balances.update(new)
        if standing is not None and earned is not None and plan.legs:
            # Only what is posted counts: a receipt that earns nothing leaves no transaction,
            # so nothing would stop it from counting again if it were sent again.
            standing.commit(plan, earned, occurred_at)
        transaction_id = None
        if plan.legs:
            transaction_id = uuid7()
            references[ref_key] = transaction_id
            postings.balances.update(new)
            if plan.pending:
                account = plan.card_accounts[Asset.POINTS]
                postings.balances.setdefault(account, balances[account])
                postings.pending[account] = postings.pending.get(account, 0) + plan.pending
                postings.waiting.append(
                    (transaction_id, plan.card_id, account, plan.pending, plan.spendable_at)
                )
            postings.transactions.append(
                (
                    transaction_id,
                    intent.type.value,
                    plan.card_id,
                    intent.partner_id,
                    state.principal.api_key_id,
                    intent.reference,
                    intent.purchase_amount,
                    intent.currency,
                    intent.description,
                    occurred_at,
                    plan.eligible,
                    plan.points_price,
                    plan.cashback_funded,
                )
            )
            postings.entries += [(transaction_id, a, asset, amt) for a, asset, amt in plan.legs]
            earned_points = plan.pending + sum(
                amt for a, asset, amt in card_legs if asset == Asset.POINTS and amt > 0
            )
            if earned_points:
                earned_on = occurred_at.astimezone(zone).date()
                # Points that wait out a return window start their life when they can be spent.
                spendable = plan.spendable_at
                starts_on = spendable.astimezone(zone).date() if spendable else earned_on
                lot = (plan.card_id, earned_on, starts_on)
                postings.lots[lot] = postings.lots.get(lot, 0) + earned_points
            postings.earnings += [
                (
                    transaction_id,
                    r["rule"],
                    r["rule_ref"],
                    r["rule_version"],
                    r["points"],
                    r["cashback"],
                )
                for r in plan.applied or []
            ]
            if plan.referrer is not None:
                postings.first_purchases.add(plan.card_id)
            if plan.referral is not None:
                _post_referral(postings, plan, balances, state.principal.api_key_id, occurred_at)
        card = {
            "points": balances[plan.card_accounts[Asset.POINTS]],
            "cashback": balances[plan.card_accounts[Asset.CASHBACK]],
        }
        status, answer = answer_for(
            plan, program, transaction_id, now if transaction_id else None, occurred_at, card
        )
        state.outcome = accepted(status, answer, posted=transaction_id is not None)
    return postings


def _post_referral(
    postings: _Postings,
    plan: Plan,
    balances: dict[int, int],
    api_key_id: uuid.UUID,
    occurred_at: datetime,
) -> None:
    """The referrer's bonus for the first purchase of the card it referred: an award of its
    own on the referring card (locked with the purchase's card, context statement)."""
    referrer, bonus = plan.referrer, plan.referral
    assert referrer is not None and bonus is not None
    transaction_id = uuid7()
    account = referrer.points_account
    balances[account] += bonus.points
    postings.balances[account] = balances[account]
    postings.transactions.append(
        (
            transaction_id,
            TransactionType.AWARD.value,
            referrer.card_id,
            bonus.partner_id,
            api_key_id,
            None,
            None,
            None,
            f"referral: card {plan.intent.card_number} made its first purchase",
            occurred_at,
            None,
            plan.points_price if bonus.partner_id is not None else None,
            None,
        )
    )
    postings.entries += [
        (transaction_id, account, Asset.POINTS.value, bonus.points),
        (transaction_id, bonus.funder, Asset.POINTS.value, -bonus.points),
    ]
    postings.earnings.append(
        (transaction_id, "campaign", bonus.campaign_code, bonus.campaign_version, bonus.points, 0)
    )
    day = occurred_at.astimezone(postings.zone).date()
    lot = (referrer.card_id, day, day)
    postings.lots[lot] = postings.lots.get(lot, 0) + bonus.points


def _not_posted_if_atomic(state: _State) -> Outcome:
    """All-or-nothing batches: the items that would have posted are reported as not posted."""
    if state.outcome is not None and state.outcome.status >= 400:
        return state.outcome
    return Outcome(status=424, rendered=b"", posted=False)
