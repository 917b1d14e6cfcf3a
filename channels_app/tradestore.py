"""The trade path's database work in plain SQL, on the models' own tables: two round trips a request.

The ORM compiled six or seven statements a trade, each its own round trip, and that was most of the trade path's
time (bench/RESULTS.md). Here a request (``services.trades.record_trades``) takes two:

1. ``TradeSession.load``: lock the channel row, then read what the decision needs: the stored trades of the
   request's external ids, the live positions, the marks of their markets. Separate statements, so that each reads
   from a snapshot taken after the lock was granted (one statement that locked and read would read from a snapshot
   taken before it waited for the lock), sent together.
2. ``TradeSession.store``: the changed positions (one UPDATE from arrays), the new positions and trades (one
   statement: the new positions' keys drawn from their sequence, then both INSERTs from arrays), the channel's
   running total and zones; then COMMIT, sent together.

On PostgreSQL outside any atomic block the session runs its own transaction in psycopg's pipeline mode: BEGIN
travels with the first round trip and COMMIT with the second (a replay or a refusal, which write nothing, end
with a COMMIT of their own; an error with ROLLBACK), and the notices queued
meanwhile are published together after COMMIT (the outbox's ``holding``). Every statement's text is the same
whatever the request's size (lists go as arrays), so most are prepared once per connection and never planned again
(``PREPARED``). Inside a caller's transaction (tests, any caller's atomic block) the
same statements run one at a time in Django's atomic block, with the outbox as usual; on SQLite, simpler statements
of the same meaning do. Values go through the fields' own adapters; the ORM stays for everything off this path.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from channels_app import outbox, pipeline
from channels_app.errors import DomainError
from channels_app.models import LIVE_POSITION_STATUSES, Channel, MarkPrice, Peer, Position, Trade
from channels_app.pipeline import BEGIN, COMMIT

CHANNEL, PEER, POSITION, TRADE, MARK = (m._meta.db_table for m in (Channel, Peer, Position, Trade, MarkPrice))
LIVE = "(" + ", ".join(f"'{status}'" for status in LIVE_POSITION_STATUSES) + ")"
CHANNEL_COLUMNS = ("id", "channel_id", "status", "initiator_id", "responder_id", "nonce", "margin_deposit",
                   "closed_pnl", "initiator_zone", "responder_zone", "margin_call_due_at", "responder_name",
                   "responder_url")
POSITION_COLUMNS = ("id", "market", "status", "quantity", "cost", "realized_pnl", "last_price", "settle_price")
BOOK = ("quantity", "cost", "realized_pnl", "last_price")
CHANNEL_FIELDS = ("closed_pnl", "initiator_zone", "responder_zone", "margin_call_due_at", "margin_call_error")

# --- the statements -------------------------------------------------------------------------------------------
_MINE = f"(SELECT id FROM {CHANNEL} WHERE channel_id = %s AND (initiator_id = %s OR responder_id = %s))"
LOCK = (f"SELECT {', '.join(f'c.{name}' for name in CHANNEL_COLUMNS)}, i.address, i.name, i.url, r.address, "
        f"r.name, r.url FROM {CHANNEL} c JOIN {PEER} i ON i.id = c.initiator_id JOIN {PEER} r ON r.id = "
        "c.responder_id WHERE c.channel_id = %s AND (c.initiator_id = %s OR c.responder_id = %s)")
STORED = (f"SELECT external_id, market, initiator_direction, amount, price, executed_at FROM {TRADE} "
          f"WHERE channel_id = {_MINE} AND external_id {{in_list}}")
POSITIONS = (f"SELECT {', '.join(POSITION_COLUMNS)} FROM {POSITION} WHERE channel_id = {_MINE} "
             f"AND status IN {LIVE} ORDER BY market, id")
MARKS = (f"SELECT market, price FROM {MARK} WHERE market {{in_list}} OR market IN (SELECT market FROM "
         f"{POSITION} WHERE channel_id = {_MINE} AND status IN {LIVE})")
# STORED and MARKS take a list: on PostgreSQL as one array parameter, so their text never varies (and can be
# prepared); on SQLite, which has no arrays, as IN (...).
STORED_PG, MARKS_PG = STORED.format(in_list="= ANY(%s::text[])"), MARKS.format(in_list="= ANY(%s::text[])")
UPDATE_POSITIONS = (
    f"UPDATE {POSITION} AS p SET status = v.status, quantity = v.quantity, cost = v.cost, realized_pnl = "
    "v.realized_pnl, last_price = v.last_price, updated_at = %s FROM unnest(%s::bigint[], %s::text[], "
    "%s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[]) AS v(id, status, quantity, cost, realized_pnl, "
    "last_price) WHERE p.id = v.id")
# The new positions' keys are drawn in the statement (k = 1..n), so the trades can refer to them before they exist;
# trades keep their keys in recording order (ORDER BY n).
INSERT = (
    f"WITH ids AS MATERIALIZED (SELECT k, nextval(pg_get_serial_sequence('{POSITION}', 'id')) AS id "
    "FROM generate_series(1, %s) AS k), "
    f"new_positions AS (INSERT INTO {POSITION} (id, channel_id, market, status, quantity, cost, realized_pnl, "
    "last_price, opened_at, updated_at) SELECT ids.id, %s, v.market, v.status, v.quantity, v.cost, v.realized_pnl, "
    "v.last_price, %s, %s FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[], "
    "%s::numeric[]) WITH ORDINALITY AS v(market, status, quantity, cost, realized_pnl, last_price, k) "
    "JOIN ids USING (k)), "
    f"new_trades AS (INSERT INTO {TRADE} (channel_id, external_id, recorded_by_id, market, direction, "
    "initiator_direction, amount, price, executed_at, recorded_at, position_id) SELECT %s, v.external_id, %s, "
    "v.market, v.direction, v.initiator_direction, v.amount, v.price, v.executed_at, %s, COALESCE(v.position_id, "
    "ids.id) FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], "
    "%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS v(external_id, market, direction, "
    "initiator_direction, amount, price, executed_at, position_id, new_k, n) LEFT JOIN ids ON ids.k = v.new_k "
    "ORDER BY v.n) "
    "SELECT k, id FROM ids ORDER BY k")
UPDATE_CHANNEL = f"UPDATE {CHANNEL} SET {', '.join(f'{name} = %s' for name in CHANNEL_FIELDS)} WHERE id = %s"
# Prepared once per connection, so never planned again (planning LOCK's join alone took 0.6 ms). Not STORED: its
# generic plan for an array of external ids halved the throughput of batches (bench/RESULTS.md).
PREPARED = frozenset({LOCK + " FOR UPDATE OF c", POSITIONS, MARKS_PG, UPDATE_POSITIONS, INSERT, UPDATE_CHANNEL})


class StoredTrade(NamedTuple):
    external_id: str
    market: str
    initiator_direction: str
    amount: Decimal
    price: Decimal
    executed_at: int


class NewTrade(NamedTuple):
    external_id: str
    market: str
    direction: str
    initiator_direction: str
    amount: Decimal
    price: Decimal
    executed_at: int
    position: Position  # stored already, or one of the request's new positions (its key assigned by ``store``)


@dataclass
class Loaded:
    channel: Channel | None  # None: no such channel, or not the peer's
    stored: dict[str, StoredTrade]
    positions: list[Position]  # live (open and in settlement), by market then key
    marks: dict[str, Decimal]


def _decimal(value) -> Decimal | None:
    return value if value is None or isinstance(value, Decimal) else Decimal(value)


def _adapt(model, field: str, value):
    return model._meta.get_field(field).get_db_prep_value(value, connection, prepared=False)


def _book(position: Position) -> list:
    return [_adapt(Position, name, getattr(position, name)) for name in BOOK]


def _in(values) -> str:
    """``IN (...)`` with a placeholder per value (SQLite; an empty list matches nothing)."""
    return "IN (" + (", ".join(["%s"] * len(values)) or "NULL") + ")"


def _postgres() -> bool:
    return connection.vendor == "postgresql"


class TradeSession:
    """One request's transaction on the trade path (see the module's docstring)."""

    def __enter__(self):
        self.own = pipeline.own_transaction()
        self.begun = self.committed = False
        if self.own:
            self._holding = outbox.holding()
            self.held = self._holding.__enter__()
        else:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.own:
            return self._atomic.__exit__(exc_type, exc, tb)
        self._holding.__exit__(exc_type, exc, tb)
        if self.begun and not self.committed:  # a replay, a refusal or an error: nothing was written
            pipeline.end(keep=exc_type is None or issubclass(exc_type, DomainError))
        if exc_type is None and self.held:
            outbox.publish(list(self.held))  # committed: the notices, together (one layer message per peer)
        return False

    def _run(self, statements: list[tuple[str, list]]) -> list[list[tuple] | None]:
        return pipeline.run(statements, prepare=PREPARED)

    # --- round trip 1 -----------------------------------------------------------------------------------------
    def load(self, *, peer_id: int, channel_id: str, external_ids: list[str], markets: set[str]) -> Loaded:
        """Lock ``channel_id`` if ``peer_id`` is one of its parties, and read what recording trades on it needs."""
        mine = [channel_id, peer_id, peer_id]
        if _postgres():
            statements = [(LOCK + " FOR UPDATE OF c", mine), (STORED_PG, [*mine, external_ids]), (POSITIONS, mine),
                          (MARKS_PG, [sorted(markets), *mine])]
        else:  # one writer at a time: no row lock
            statements = [(LOCK, mine), (STORED.format(in_list=_in(external_ids)), [*mine, *external_ids]),
                          (POSITIONS, mine), (MARKS.format(in_list=_in(markets)), [*sorted(markets), *mine])]
        if self.own:
            statements.insert(0, BEGIN)
            self.begun = True
        channel_rows, trade_rows, position_rows, mark_rows = self._run(statements)
        if not channel_rows:
            return Loaded(None, {}, [], {})
        channel = self._channel(channel_rows[0])
        positions = []
        for row in position_rows:
            values = dict(zip(POSITION_COLUMNS, row))
            for name in (*BOOK, "settle_price"):
                values[name] = _decimal(values[name])
            positions.append(Position(channel=channel, **values))
        stored = {row[0]: StoredTrade(row[0], row[1], row[2], _decimal(row[3]), _decimal(row[4]), int(row[5]))
                  for row in trade_rows}
        return Loaded(channel, stored, positions, {market: _decimal(price) for market, price in mark_rows})

    @staticmethod
    def _channel(row) -> Channel:
        values = dict(zip(CHANNEL_COLUMNS, row[:len(CHANNEL_COLUMNS)]))
        for name in ("margin_deposit", "closed_pnl"):
            values[name] = _decimal(values[name])
        if isinstance(values["margin_call_due_at"], str):  # SQLite hands it back as text
            values["margin_call_due_at"] = parse_datetime(values["margin_call_due_at"])
        channel = Channel(**values)
        i_address, i_name, i_url, r_address, r_name, r_url = row[len(CHANNEL_COLUMNS):]
        channel.initiator = Peer(id=values["initiator_id"], address=i_address, name=i_name, url=i_url)
        channel.responder = Peer(id=values["responder_id"], address=r_address, name=r_name, url=r_url)
        return channel

    # --- round trip 2 -----------------------------------------------------------------------------------------
    def store(self, *, channel: Channel, peer_id: int, new_positions: list[Position],
              changed_positions: list[Position], trades: list[NewTrade], channel_fields: dict) -> None:
        """Write what the request decided, and commit when the session is its own. ``new_positions`` get their keys.

        Changed positions first: a position this request closes must be closed before a new one of its market opens
        (one open position per market, checked at once)."""
        now = _adapt(Trade, "recorded_at", timezone.now())
        if not _postgres():
            self._one_by_one(channel, peer_id, new_positions, changed_positions, trades, now)
            if channel_fields:
                self._run([self._channel_update(channel)])
            return
        statements = []
        if changed_positions:
            statements.append((UPDATE_POSITIONS, [now, [p.pk for p in changed_positions],
                                                  [p.status for p in changed_positions],
                                                  *([_adapt(Position, n, getattr(p, n)) for p in changed_positions]
                                                    for n in BOOK)]))
        new_index = {id(p): k for k, p in enumerate(new_positions, start=1)}
        statements.append((INSERT, [
            len(new_positions), channel.pk, now, now, [p.market for p in new_positions],
            [p.status for p in new_positions], *([_adapt(Position, n, getattr(p, n)) for p in new_positions]
                                                 for n in BOOK),
            channel.pk, peer_id, now, [t.external_id for t in trades], [t.market for t in trades],
            [t.direction for t in trades], [t.initiator_direction for t in trades],
            [_adapt(Trade, "amount", t.amount) for t in trades], [_adapt(Trade, "price", t.price) for t in trades],
            [t.executed_at for t in trades],
            [None if id(t.position) in new_index else t.position.pk for t in trades],
            [new_index.get(id(t.position)) for t in trades]]))
        if channel_fields:
            statements.append(self._channel_update(channel))
        if self.own:
            statements.append(COMMIT)
        results = self._run(statements)
        for k, key in results[1 if changed_positions else 0]:
            new_positions[k - 1].pk = key
        self.committed = self.own

    @staticmethod
    def _channel_update(channel: Channel) -> tuple[str, list]:
        """All of the fields a trade may change, as they are now (one statement text, whichever changed)."""
        return UPDATE_CHANNEL, [*(_adapt(Channel, n, getattr(channel, n)) for n in CHANNEL_FIELDS), channel.pk]

    def _one_by_one(self, channel, peer_id, new_positions, changed_positions, trades, now) -> None:
        """SQLite: in-process, one writer; a statement each costs no network, and ``executemany`` keeps a batch
        under SQLite's limit of bound variables a statement."""
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {POSITION} SET status = %s, quantity = %s, cost = %s, realized_pnl = %s, last_price = %s, "
                "updated_at = %s WHERE id = %s", [(p.status, *_book(p), now, p.pk) for p in changed_positions])
            for position in new_positions:
                cursor.execute(
                    f"INSERT INTO {POSITION} (channel_id, market, status, quantity, cost, realized_pnl, last_price, "
                    "opened_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    [channel.pk, position.market, position.status, *_book(position), now, now])
                position.pk = cursor.fetchone()[0]
            cursor.executemany(
                f"INSERT INTO {TRADE} (channel_id, external_id, recorded_by_id, market, direction, "
                "initiator_direction, amount, price, executed_at, recorded_at, position_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(channel.pk, t.external_id, peer_id, t.market, t.direction, t.initiator_direction,
                  _adapt(Trade, "amount", t.amount), _adapt(Trade, "price", t.price), t.executed_at, now,
                  t.position.pk) for t in trades])
