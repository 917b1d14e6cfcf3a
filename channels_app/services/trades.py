"""Recording trades: the trade, its position update and the margin check commit together or not at all.

The database work is plain SQL in two round trips (channels_app/tradestore.py); the rules stay here, on the same
values as everywhere: positions as models, books and PnL from ``accounting``, balances from ``valuation.margins``.
The margin check follows the zones (channels_app.risk): a trade that reduces its position is always accepted; any
other is refused with ``margin_call`` while either party is in orange or red, and with ``margin_exceeded`` when it
would leave a balance below zero.
"""
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from channels_app import accounting, risk, valuation
from channels_app.errors import Code, DomainError, channel_not_found
from channels_app.models import (
    INITIATOR,
    POSITION_TRANSITIONS,
    TRADING_STATUSES,
    Channel,
    Peer,
    Position,
    PositionStatus,
)
from channels_app.money import MONEY, ZERO, fmt
from channels_app.notices import StreamAction, notify_channel, notify_positions
from channels_app.services import zones
from channels_app.statemachine import move
from channels_app.tradestore import AsyncTradeSession, NewTrade, StoredTrade, TradeSession
from channels_app.values import Margins


class TradeInput(NamedTuple):
    """One execution as the reporting party saw it (``direction`` from its own side); amounts already exact. A named
    tuple: a batch makes thousands, and a frozen dataclass took three times as long to make."""

    external_id: str
    market: str
    direction: str  # "buy" | "sell"
    amount: Decimal
    price: Decimal
    executed_at: int  # unix seconds


@dataclass(frozen=True)
class Recorded:
    channel: Channel
    external_ids: list[str]  # of every item, in order
    replayed: list[bool]  # per item: True when it was already stored (nothing changed for it)


def _same_trade(stored: StoredTrade, item: TradeInput, initiator_direction: str) -> bool:
    """Content compared from the initiator's side, so either party may report the same execution."""
    return (
        stored.market == item.market
        and stored.initiator_direction == initiator_direction
        and stored.amount == item.amount
        and stored.price == item.price
        and stored.executed_at == item.executed_at
    )


def _margin_call_sentence(zones_now: risk.Zones, balances) -> str:
    parties = [f"the {name}'s margin balance {fmt(balance)} is in {zone} ({risk.DESCRIPTION[zone]})"
               for name, zone, balance in zip(("initiator", "responder"), zones_now, balances)
               if zone != risk.MarginZone.GREEN]
    return "margin call: " + " and ".join(parties) + "; only a trade that reduces the position is accepted"


def fresh_items(*, channel: Channel, role: str, trades: list[TradeInput],
                stored: dict) -> list[tuple[int, TradeInput, str]]:
    """(index, item, initiator_direction) of the items not stored yet (``stored``: external_id -> stored trade);
    refused when an item repeats an external_id with other content, or (with any fresh item) when the channel does
    not trade."""
    fresh = []
    for index, item in enumerate(trades):
        initiator_direction = item.direction if role == INITIATOR else accounting.opposite(item.direction)
        existing = stored.get(item.external_id)
        if existing is None:
            fresh.append((index, item, initiator_direction))
        elif not _same_trade(existing, item, initiator_direction):
            raise DomainError(Code.DUPLICATE_TRADE, f"external_id {item.external_id!r} was already recorded "
                              "with different content", item=index)
    if fresh and channel.status not in TRADING_STATUSES:
        raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; trades are recorded only on "
                          "an opened or settling channel")
    return fresh


@dataclass
class Decision:
    """What recording a request's fresh trades changes: computed from what was read, before anything is written."""

    new_trades: list[NewTrade]
    touched: list[Position]  # every position changed, in the order first touched
    created: list[Position]  # those among them that are new (no key yet)
    channel_fields: dict  # the channel's fields that change (running total, zones, margin call)
    before: Margins
    after: Margins


def decide(*, channel: Channel, fresh: list[tuple[int, TradeInput, str]], positions: list[Position],
           marks: dict[str, Decimal]) -> Decision:
    """The rules, on values (no database): each of ``fresh`` ((index, item, initiator_direction)) applied in order
    to the channel's live ``positions`` (changed in place; new ones created), the margin check for each, and what
    the channel's fields become; a refusal is a ``DomainError`` naming the item.

    Margins move by the PnL change of the one position each trade touches, so the initiator's PnL is kept as a
    running sum from the same formula every reader uses (selectors.margins): the channel's running total of closed
    positions plus its live positions (a batch stays linear in its size).
    """
    pnl = valuation.initiator_pnl(closed_pnl=channel.closed_pnl, live_positions=positions, marks=marks)
    newly_closed = ZERO  # realized PnL of the positions this request closes
    before = after = valuation.margins(deposit=channel.margin_deposit, initiator_pnl=pnl)
    rate = risk.maintenance_rate()
    green = risk.floors(channel.margin_deposit, rate)[1]  # both balances at least this: both green
    open_by_market = {p.market: p for p in positions if p.status == PositionStatus.OPEN}
    touched: dict[int, Position] = {}  # id() -> position changed by this request, in order
    worth: dict[int, tuple[Decimal, Decimal]] = {}  # id() -> (mark, PnL) after this request's last trade on it
    new_trades = []
    for index, item, initiator_direction in fresh:
        position = open_by_market.get(item.market)
        if position is None:  # first trade in this market, or the previous position is flat, frozen or settled
            position = open_by_market[item.market] = Position(channel=channel, market=item.market,
                                                              last_price=item.price)
        balances_before = after  # the rules apply as if the items were recorded one by one
        book_before = position.book
        mark = valuation.position_mark(position, marks)
        known = worth.get(id(position))  # its PnL at this mark, if this request's previous trade computed it
        pnl = MONEY.subtract(pnl, known[1] if known and known[0] == mark else accounting.total_pnl(book_before, mark))
        book = accounting.apply_trade(book_before, initiator_direction, item.amount, item.price)
        position.set_book(book)
        position.last_price = item.price
        mark = valuation.position_mark(position, marks)
        position_pnl = accounting.total_pnl(book, mark)
        worth[id(position)] = mark, position_pnl
        pnl = MONEY.add(pnl, position_pnl)
        if book.is_flat:  # closed for good: its realized PnL joins the channel's closed total
            move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
            newly_closed = MONEY.add(newly_closed, position.realized_pnl)
            del open_by_market[item.market]
        after = valuation.margins(deposit=channel.margin_deposit, initiator_pnl=pnl)
        if not risk.reduces(book_before.quantity, book.quantity):
            if min(balances_before) < green:
                zones_before = risk.zones(balances_before, channel.margin_deposit, rate)
                raise DomainError(Code.MARGIN_CALL, _margin_call_sentence(zones_before, balances_before), item=index)
            if min(after) < 0:
                raise DomainError(Code.MARGIN_EXCEEDED, "this trade would leave a margin balance below zero "
                                  f"(initiator {after.initiator}, responder {after.responder})", item=index)
        touched[id(position)] = position
        new_trades.append(NewTrade(item.external_id, item.market, item.direction, initiator_direction, item.amount,
                                   item.price, item.executed_at, position))
    channel_fields = {}
    if newly_closed != ZERO:
        channel.closed_pnl = channel_fields["closed_pnl"] = MONEY.add(channel.closed_pnl, newly_closed)
    channel_fields.update(zones.changes(channel, after)[1])
    return Decision(new_trades, list(touched.values()), [p for p in touched.values() if p.pk is None],
                    channel_fields, before, after)


def announce(channel: Channel, decision: Decision, marks: dict[str, Decimal]) -> None:
    """Both parties hear what the request changed, once it is stored (the new positions have their keys).

    A position both opened and closed inside the request was never live outside it: it is not announced (its
    realized PnL is in the marginUpdated); every other touched position is, once, in its final state.
    """
    created = {id(p) for p in decision.created}
    notify_positions(channel, [p for p in decision.touched
                               if not (id(p) in created and p.status == PositionStatus.CLOSED)], marks)
    if decision.after != decision.before:
        notify_channel(channel, StreamAction.MARGIN_UPDATED, decision.after)


def _recording(*, peer_id: int, channel_id: str, trades: list[TradeInput]):
    """The steps of recording ``trades``, for a session to carry out: yields (method, arguments) of the session and
    is sent back what it returned; returns the ``Recorded``. So the rules exist once, whether a database thread runs
    them (``record_trades``) or the event loop (``arecord_trades``).

    The channel row lock (``load``) serializes everything on this channel: idempotency check, position, margin.
    Most requests carry trades never seen before, so the first ``load`` leaves out the lookup of stored trades when
    the session can do without it (``_OwnTransaction``, channels_app/tradestore.py; on PostgreSQL the lookup was a
    third of the database's time a trade, bench/RESULTS.md), and the request is decided as if every item were new:

    - stored: the usual two round trips;
    - an external id recorded before (a replay): the trades' unique constraint refuses the store, nothing is written,
      and the request starts again, this time with the lookup (``load(stored=True)``), as below;
    - refused (margin, the channel's state): a refusal is only final for trades not stored yet, so the lookup follows
      and ends the transaction (``stored_and_commit``, still two round trips); if an item was stored after all, the
      request starts again with it.
    """
    external_ids = [item.external_id for item in trades]
    mine = dict(peer_id=peer_id, channel_id=channel_id, external_ids=external_ids)
    load = dict(mine, markets={item.market for item in trades})
    loaded = yield "load", dict(load, stored=False)
    if loaded.channel is not None and loaded.stored is None:
        channel = loaded.channel
        try:
            fresh = fresh_items(channel=channel, role=channel.role_of(peer_id), trades=trades, stored={})
            decision = decide(channel=channel, fresh=fresh, positions=loaded.positions, marks=loaded.marks)
        except DomainError as refusal:
            if not (yield "stored_and_commit", mine):
                raise refusal
        else:
            if (yield "store", _store(channel, peer_id, decision)):
                announce(channel, decision, loaded.marks)
                return Recorded(channel, external_ids, [False] * len(trades))
        loaded = yield "load", dict(load, stored=True)  # a transaction anew: the stored trades read
    channel = loaded.channel
    if channel is None:
        raise channel_not_found()
    fresh = fresh_items(channel=channel, role=channel.role_of(peer_id), trades=trades, stored=loaded.stored)
    if not fresh:  # a replay: answered from what is stored, nothing changes, nobody is notified
        return Recorded(channel, external_ids, [True] * len(trades))
    decision = decide(channel=channel, fresh=fresh, positions=loaded.positions, marks=loaded.marks)
    yield "store", _store(channel, peer_id, decision)  # the stored trades were read under the lock: no refusal
    announce(channel, decision, loaded.marks)
    stored_now = {item.external_id for _, item, _ in fresh}
    return Recorded(channel, external_ids, [external_id not in stored_now for external_id in external_ids])


def _store(channel: Channel, peer_id: int, decision: Decision) -> dict:
    """The arguments of the session's ``store`` for ``decision``."""
    return dict(channel=channel, peer_id=peer_id, new_positions=decision.created,
                changed_positions=[p for p in decision.touched if p.pk is not None], trades=decision.new_trades,
                channel_fields=decision.channel_fields)


def record_trades(*, peer: Peer, channel_id: str, trades: list[TradeInput]) -> Recorded:
    """Trades of one channel, all or nothing: as if recorded one by one in order, in one transaction.

    A refusal names the refused item by its index (``DomainError.item``).
    """
    steps, answer = _recording(peer_id=peer.id, channel_id=channel_id, trades=trades), None
    with TradeSession() as session:
        while True:
            try:
                method, arguments = steps.send(answer)
            except StopIteration as done:
                return done.value
            answer = getattr(session, method)(**arguments)


async def arecord_trades(*, peer: Peer, channel_id: str, trades: list[TradeInput]) -> Recorded:
    """``record_trades`` on the event loop (PostgreSQL, ``aiodb.enabled()``): the same steps, the same statements,
    with no thread in between."""
    steps, answer = _recording(peer_id=peer.id, channel_id=channel_id, trades=trades), None
    async with AsyncTradeSession() as session:
        while True:
            try:
                method, arguments = steps.send(answer)
            except StopIteration as done:
                return done.value
            answer = await getattr(session, method)(**arguments)


def record_trade(*, peer: Peer, channel_id: str, trade: TradeInput) -> Recorded:
    """One trade: stored with its position update and margin check, or refused with nothing changed."""
    return record_trades(peer=peer, channel_id=channel_id, trades=[trade])
