"""The figures behind the channel page's chart: each party's margin balance and the positions' PnL over time.

The history is rebuilt by replaying the channel's trades in order with ``channels_app.accounting`` (one book per
position) and valuing every book with the one margin formula (``channels_app.valuation.margins``: the initiator's
balance is the deposit plus the initiator's PnL, the responder's the deposit minus it). It is the history **at
trade prices**: at each trade, the mark of its market is taken to be that trade's price. Mark prices set between
trades are not drawn (only the latest mark is stored, with no history), except in the last point, "now", which is
valued as the channel page values it (``selectors.margins``: back-office marks, frozen settlement prices).
Settlements are replayed too: a position proposed for settlement is valued at its frozen price from the proposal
on, and its PnL leaves both balances when the settlement completes (it was paid). A failed settlement's merged
positions are replayed as one from the start, as the ledger's own rebuild (``recompute_positions``) does.

Fast on a channel of any size: a fixed handful of queries (the trades in one ``values_list`` ordered by id, never
a query per trade), the replay in memory, and at most ``MAX_POINTS`` points kept (the last state of each run of
trades; the first and the latest always). Exact ``Decimal`` throughout, to the chart too: only
``backoffice.charts`` turns values into floats, as drawing coordinates (display only, never money).
"""
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from django.utils.html import format_html

from backoffice import charts
from channels_app import accounting, selectors, valuation
from channels_app.models import Channel, MarkPrice, Position, PositionStatus, Trade
from channels_app.money import MONEY, ZERO, fmt
from settlement.models import Settlement, SettlementState, SettlementTransition

MAX_POINTS = 300
MAX_MARKETS = 6  # lines of the PnL chart; further markets are summed into one "other markets" line
OTHER_MARKETS = "other markets"


@dataclass(frozen=True)
class Point:
    at: datetime
    initiator: Decimal
    responder: Decimal
    pnl_by_market: dict[str, Decimal] = field(default_factory=dict)  # initiator's side, unsettled positions


@dataclass(frozen=True)
class History:
    points: list[Point]  # in time order; the last one is "now"
    markets: list[str]  # in the order they were first traded
    trade_count: int


def _roots(channel: Channel) -> tuple[dict[int, int], dict[int, Decimal]]:
    """Each position's book key (the position a failed settlement merged it into, followed to the end) and the
    frozen settlement price of those that have one."""
    rows = list(Position.objects.filter(channel=channel).values_list("id", "merged_into_id", "settle_price"))
    merged = {pk: into for pk, into, _ in rows}
    roots = {}
    for pk in merged:
        root, seen = pk, set()
        while merged.get(root) is not None and root not in seen:
            seen.add(root)
            root = merged[root]
        roots[pk] = root
    return roots, {pk: price for pk, _, price in rows if price is not None}


def _settlement_events(channel: Channel, roots: dict[int, int]) -> list[tuple[datetime, str, list[int]]]:
    """(when, "proposed" or "completed", book keys) of the settlements whose positions are still theirs (a failed
    or rejected one gave its positions back: nothing of it shows)."""
    keys_by_settlement: dict[int, list[int]] = {}
    through = Settlement.positions.through.objects.filter(settlement__channel=channel)
    for settlement_id, position_id in through.values_list("settlement_id", "position_id"):
        keys_by_settlement.setdefault(settlement_id, []).append(roots.get(position_id, position_id))
    if not keys_by_settlement:
        return []
    transitions = SettlementTransition.objects.filter(
        settlement_id__in=list(keys_by_settlement),
        to_state__in=[SettlementState.PROPOSED, SettlementState.COMPLETED]).order_by("at", "id")
    return [(at, state, keys_by_settlement[pk]) for pk, state, at in
            transitions.values_list("settlement_id", "to_state", "at")]


class _Replay:
    """The channel's books replayed event by event, with the initiator's PnL kept as running sums (a trade
    revalues only the books of its own market), so each event costs the same however long the history."""

    def __init__(self, frozen_prices: dict[int, Decimal]):
        self.books: dict[int, accounting.Book] = {}
        self.market_of: dict[int, str] = {}
        self.value: dict[int, Decimal] = {}  # each unsettled book's PnL (initiator's side)
        self.market_pnl: dict[str, Decimal] = {}
        self.total = ZERO
        self.open_keys: dict[str, set[int]] = {}  # books valued at their market's latest trade price
        self.frozen: set[int] = set()
        self.settled: set[int] = set()
        self.frozen_prices = frozen_prices
        self.last_price: dict[str, Decimal] = {}

    def _revalue(self, key: int, price: Decimal) -> None:
        new = accounting.total_pnl(self.books[key], price)
        delta = MONEY.subtract(new, self.value.get(key, ZERO))
        self.value[key] = new
        market = self.market_of[key]
        self.market_pnl[market] = MONEY.add(self.market_pnl.get(market, ZERO), delta)
        self.total = MONEY.add(self.total, delta)

    def trade(self, key: int, market: str, direction: str, amount: Decimal, price: Decimal) -> None:
        self.market_of[key] = market
        self.last_price[market] = price
        self.books[key] = accounting.apply_trade(self.books.get(key, accounting.Book()), direction, amount, price)
        if key in self.settled:  # cannot happen in a consistent ledger; drawn as the ledger says anyway
            self.settled.discard(key)
        keys = self.open_keys.setdefault(market, set())
        if key not in self.frozen:
            self._revalue(key, price)
            (keys.add if not self.books[key].is_flat else keys.discard)(key)
        for other in list(keys):
            if other != key:
                self._revalue(other, price)

    def settlement(self, state: str, keys: list[int]) -> None:
        for key in keys:
            if key not in self.books or key in self.settled:
                continue
            if state == SettlementState.PROPOSED:
                self.frozen.add(key)
                self.open_keys.get(self.market_of[key], set()).discard(key)
                price = self.frozen_prices.get(key)
                if price is not None:
                    self._revalue(key, price)
            else:  # completed: paid, its PnL leaves the balances
                self._revalue_to_zero(key)
                self.settled.add(key)

    def _revalue_to_zero(self, key: int) -> None:
        market = self.market_of[key]
        old = self.value.pop(key, ZERO)
        self.market_pnl[market] = MONEY.subtract(self.market_pnl.get(market, ZERO), old)
        self.total = MONEY.subtract(self.total, old)
        self.open_keys.get(market, set()).discard(key)


def _in_order(rows, events):
    """Trades and settlement events merged in time order (a settlement event before a trade recorded at the same
    moment), each as (when, event): a trade's five fields, or a settlement's (state, book keys)."""
    index = 0
    for position_id, market, direction, amount, price, recorded_at in rows:
        while index < len(events) and events[index][0] <= recorded_at:
            yield events[index][0], events[index][1:]
            index += 1
        yield recorded_at, (position_id, market, direction, amount, price)
    for at, state, keys in events[index:]:
        yield at, (state, keys)


def channel_history(channel: Channel, *, max_points: int = MAX_POINTS) -> History:
    """The channel's balances and per-market PnL from its opening to now (module docstring: at trade prices).
    ``channel`` as read now (its ``closed_pnl`` values the last point, as on the channel page)."""
    roots, frozen_prices = _roots(channel)
    events = _settlement_events(channel, roots)
    trades = Trade.objects.filter(channel=channel).order_by("id").values_list(
        "position_id", "market", "initiator_direction", "amount", "price", "recorded_at")
    rows = list(trades)
    stride = max(1, -(-(len(rows) + len(events)) // max(max_points - 2, 1)))
    replay = _Replay(frozen_prices)
    deposit = channel.margin_deposit
    points = [Point(channel.created_at, deposit, deposit, {})]
    markets: list[str] = []
    seen: set[str] = set()
    ordered = list(_in_order(rows, events))
    for index, (at, event) in enumerate(ordered, start=1):
        if len(event) == 2:
            replay.settlement(*event)
        else:
            position_id, market, direction, amount, price = event
            if market not in seen:
                seen.add(market)
                markets.append(market)
            replay.trade(roots.get(position_id, position_id), market, direction, amount, price)
        if index % stride == 0 or index == len(ordered):  # the last state of each run of ``stride`` events
            balances = valuation.margins(deposit=deposit, initiator_pnl=replay.total)
            points.append(Point(at, balances.initiator, balances.responder, dict(replay.market_pnl)))
    points.append(_now(channel, replay))
    return History(points=points, markets=markets, trade_count=len(rows))


def _now(channel: Channel, replay: _Replay) -> Point:
    """The latest point, as the channel page values it: the balances from ``selectors.margins`` (back-office
    marks, frozen settlement prices), the per-market PnL from the replayed books at those same marks."""
    live = selectors.live_positions_of(channel)
    marks = dict(MarkPrice.objects.filter(market__in=set(replay.market_of.values())).values_list("market", "price"))
    balances = selectors.margins(channel, live_positions=live, marks=marks)
    frozen_now = {p.pk: p.settle_price for p in live if p.status == PositionStatus.IN_SETTLEMENT}
    by_market = dict(replay.market_pnl)
    for market, keys in replay.open_keys.items():
        mark = marks.get(market)
        if mark is None:
            continue
        for key in keys:  # an open book, valued at the back-office mark instead of its last trade price
            delta = MONEY.subtract(accounting.total_pnl(replay.books[key], mark), replay.value.get(key, ZERO))
            by_market[market] = MONEY.add(by_market.get(market, ZERO), delta)
    for key, price in frozen_now.items():  # proposed for settlement just now, after the last replayed event
        if key in replay.books and key not in replay.frozen and price is not None:
            market = replay.market_of[key]
            delta = MONEY.subtract(accounting.total_pnl(replay.books[key], price), replay.value.get(key, ZERO))
            by_market[market] = MONEY.add(by_market.get(market, ZERO), delta)
    return Point(datetime.now(timezone.utc), balances.initiator, balances.responder, by_market)


def _utc(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _market_lines(history: History) -> list[tuple[str, list[Decimal]]]:
    """One line per market (the first ``MAX_MARKETS``), the rest summed into "other markets"."""
    shown, rest = history.markets[:MAX_MARKETS], history.markets[MAX_MARKETS:]
    lines = [(market, [p.pnl_by_market.get(market, ZERO) for p in history.points]) for market in shown]
    if rest:
        lines.append((OTHER_MARKETS, [valuation.sum_realized(p.pnl_by_market.get(m, ZERO) for m in rest)
                                      for p in history.points]))
    return lines


def channel_chart(channel: Channel):
    """The channel page's two pictures (balances, positions' PnL) as HTML with inline SVG."""
    history = channel_history(channel)
    points = history.points
    xs = [p.at.timestamp() for p in points]  # times (unix seconds), drawing coordinates only
    middle = datetime.fromtimestamp((xs[0] + xs[-1]) / 2, tz=timezone.utc)
    x_labels = [(xs[0], _utc(points[0].at), "start"), (middle.timestamp(), _utc(middle), "middle"),
                (xs[-1], _utc(points[-1].at) + " (now)", "end")]
    balances = charts.line_chart(
        chart_id="margin-history", title="Margin balances over time", xs=xs, x_labels=x_labels,
        y_label="margin balance",
        series=[charts.Series("initiator", [p.initiator for p in points], fmt(points[-1].initiator)),
                charts.Series("responder", [p.responder for p in points], fmt(points[-1].responder))])
    lines = _market_lines(history)
    pnl = charts.line_chart(
        chart_id="pnl-history", title="Positions' PnL over time (initiator's side; the responder's is its opposite)",
        xs=xs, x_labels=x_labels, y_label="PnL (initiator)",
        series=[charts.Series(label, values, fmt(values[-1])) for label, values in lines]
    ) if lines else format_html("<p>{}</p>", "No trades yet.")
    return format_html(
        '<fieldset class="module aligned" id="channel-charts"><h2>{}</h2>'
        '<div class="form-row"><p class="help">{}</p>{}</div><div class="form-row">{}</div></fieldset>',
        "Balances and PnL over time",
        f"{history.trade_count} trade(s), replayed at trade prices: between two trades the mark is the latest "
        "trade's price (marks set meanwhile are not drawn); the last point is now, at today's marks; a completed "
        "settlement's PnL leaves both balances.", balances, pnl)
