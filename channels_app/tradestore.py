"""The trade path's database work in plain SQL, on the models' own tables: two round trips a request.

The ORM compiled six or seven statements a trade, each its own round trip, and that was most of the trade path's
time (bench/RESULTS.md). Here a request (``services.trades``) takes two, each one script (channels_app/pipeline.py):

1. ``load_statements``: lock the channel row, then read what the decision needs: the live positions, the marks of
   their markets and, where the session must (``_OwnTransaction``), the stored trades of the request's external
   ids. Separate statements, so that each reads from a snapshot taken after the lock was granted (one statement
   that locked and read would read from a snapshot taken before it waited for the lock).
2. ``store_statements``: the changed positions (one UPDATE from JSON records), the new positions and trades (one
   statement: the new positions' keys drawn from their sequence, then both INSERTs from JSON records), the
   channel's running total and zones; then COMMIT.

Two sessions carry them out. ``AsyncTradeSession`` is the server's on PostgreSQL: on the event loop, on a connection
of the loop's own pool (channels_app/aiodb.py). ``TradeSession`` runs on a database thread: on PostgreSQL outside
any atomic block it too runs its own transaction (BEGIN travels with the first round trip and COMMIT with the
second); inside a caller's transaction (tests, any caller's atomic block) the same scripts run within Django's atomic
block, with the outbox as usual; on SQLite, simpler statements of the same meaning run one at a time. A replay or a
refusal, which write nothing, ends its own transaction with a COMMIT, an error with ROLLBACK (a replay taken for new
trades takes two round trips more: services.trades' ``_recording``); the notices queued
meanwhile are published together after COMMIT (the outbox's ``holding``). Every statement's text is the same whatever
the request's size, so all but one are prepared once per connection (``Prepared``) and never planned again. Values go
through the fields' own adapters; the ORM stays for everything off this path.
"""

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import NamedTuple

import orjson
import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from channels_app import aiodb, outbox, pipeline
from channels_app.errors import DomainError
from channels_app.models import (
    LIVE_POSITION_STATUSES,
    TRADE_EXTERNAL_ID_UNIQUE,
    Channel,
    MarkPrice,
    Peer,
    Position,
    Trade,
)
from channels_app.pipeline import BEGIN, COMMIT, ROLLBACK, Prepared

logger = logging.getLogger(__name__)
CHANNEL, PEER, POSITION, TRADE, MARK = (m._meta.db_table for m in (Channel, Peer, Position, Trade, MarkPrice))
LIVE = "(" + ", ".join(f"'{status}'" for status in LIVE_POSITION_STATUSES) + ")"
# The channel's fields a trade may change: its UPDATE writes them all (one statement text), each as the lock read
# it unless the decision changed it, so each must be read (a field left unread was written back as its default).
CHANNEL_FIELDS = ("closed_pnl", "initiator_zone", "responder_zone", "margin_call_due_at", "margin_call_error")
CHANNEL_COLUMNS = ("id", "channel_id", "status", "initiator_id", "responder_id", "nonce", "margin_deposit",
                   "responder_name", "responder_url", *CHANNEL_FIELDS)  # what the lock reads
POSITION_COLUMNS = ("id", "market", "status", "quantity", "cost", "realized_pnl", "last_price", "settle_price")
BOOK = ("quantity", "cost", "realized_pnl", "last_price")

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
# On PostgreSQL: each list a request sends is one value, so a statement's text never depends on the request's size
# (and most are prepared: ``Prepared``): the external ids as a JSON array, the markets as an array, and the rows a
# request writes as JSON records (``_records``; psycopg renders a JSON text in microseconds where it took 0.4 ms
# to render the arrays of a batch). On SQLite lists go as IN (...).
# Not prepared: STORED. Its generic plan, made while the trades table was small, scans the table for each request
# and keeps doing so as the table grows, until the table is next analyzed: as a join or as LATERAL (... LIMIT 1),
# batches fell to a half or a quarter (bench/RESULTS.md). Planned each time, it costs PostgreSQL about 60 us more
# a request.
STORED_PG = STORED.format(in_list="= ANY(ARRAY(SELECT json_array_elements_text(%s::json)))")
LOCK_PG = Prepared("trade_lock", LOCK + " FOR UPDATE OF c")
POSITIONS_PG = Prepared("trade_positions", POSITIONS)
MARKS_PG = Prepared("trade_marks", MARKS.format(in_list="= ANY(%s::text[])"))
_BOOK_COLUMNS = "quantity numeric, cost numeric, realized_pnl numeric, last_price numeric"
UPDATE_POSITIONS = Prepared("trade_update_positions", (
    f"UPDATE {POSITION} AS p SET status = v.status, quantity = v.quantity, cost = v.cost, realized_pnl = "
    "v.realized_pnl, last_price = v.last_price, updated_at = %s FROM json_to_recordset(%s::json) AS "
    f"v(id bigint, status text, {_BOOK_COLUMNS}) WHERE p.id = v.id"))
# The new positions' keys are drawn in the statement (one per record k), so the trades can refer to them before they
# exist; trades keep their keys in recording order (ORDER BY n). Nothing in it depends on a value's size, so its
# generic plan costs what a custom one does and PostgreSQL keeps it (with the positions counted by a parameter it
# planned the statement anew at every execution: 90 us of its CPU a trade, bench/RESULTS.md). A value in a SELECT
# list says its type: PREPARE has no column to infer it from. The sequence is looked up once (``s``), not once a
# row.
INSERT = Prepared("trade_insert", (
    f"WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('{POSITION}', 'id')::regclass AS seq), "
    "new AS MATERIALIZED (SELECT v.*, nextval(s.seq) AS id FROM json_to_recordset(%s::json) AS "
    f"v(k int, market text, status text, {_BOOK_COLUMNS}), s), "
    f"new_positions AS (INSERT INTO {POSITION} (id, channel_id, market, status, quantity, cost, realized_pnl, "
    "last_price, opened_at, updated_at) SELECT new.id, %s::bigint, new.market, new.status, new.quantity, new.cost, "
    "new.realized_pnl, new.last_price, %s::timestamptz, %s::timestamptz FROM new), "
    f"new_trades AS (INSERT INTO {TRADE} (channel_id, external_id, recorded_by_id, market, direction, "
    "initiator_direction, amount, price, executed_at, recorded_at, position_id) SELECT %s::bigint, v.external_id, "
    "%s::bigint, v.market, v.direction, v.initiator_direction, v.amount, v.price, v.executed_at, %s::timestamptz, "
    "COALESCE(v.position_id, new.id) FROM json_to_recordset(%s::json) AS v(n int, external_id text, market text, "
    "direction text, initiator_direction text, amount numeric, price numeric, executed_at bigint, position_id bigint, "
    "new_k int) "
    "LEFT JOIN new ON new.k = v.new_k ORDER BY v.n) "
    "SELECT k, id FROM new ORDER BY k"))
UPDATE_CHANNEL = Prepared("trade_update_channel", (
    f"UPDATE {CHANNEL} SET {', '.join(f'{name} = %s' for name in CHANNEL_FIELDS)} WHERE id = %s"))


def _records(rows: list[dict]) -> str:
    """Rows for ``json_to_recordset`` (decimals as their exact text: ``_numeric``). orjson: a batch's records took
    the stdlib about 100 us, a tenth of that here (bench/RESULTS.md)."""
    return orjson.dumps(rows).decode()


def _numeric(value: Decimal | None) -> str | None:
    """A decimal in a JSON record: its exact text (PostgreSQL's ``numeric`` reads it back unchanged, scale too), as
    ``ExactDecimalField`` hands PostgreSQL the Decimal itself."""
    return None if value is None else str(value)


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
    stored: dict[str, StoredTrade] | None  # of the request's external ids; None: not read (``_OwnTransaction``)
    positions: list[Position]  # live (open and in settlement), by market then key
    marks: dict[str, Decimal]


def _decimal(value) -> Decimal | None:
    return value if value is None or isinstance(value, Decimal) else Decimal(value)


@cache
def _field(model, name: str):
    return model._meta.get_field(name)


def _adapt(model, field: str, value, db=None):
    """``value`` as ``field``'s own adapter hands it to the database (``db``: the connection, looked up once by a
    caller with many values; the lookup is not free on the event loop)."""
    return _field(model, field).get_db_prep_value(value, db or connection, prepared=False)


def _book(position: Position) -> list:
    return [_adapt(Position, name, getattr(position, name)) for name in BOOK]


def _in(values) -> str:
    """``IN (...)`` with a placeholder per value (SQLite; an empty list matches nothing)."""
    return "IN (" + (", ".join(["%s"] * len(values)) or "NULL") + ")"


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def load_statements(*, peer_id: int, channel_id: str, external_ids: list[str], markets: set[str],
                    stored: bool = True) -> list:
    """Round trip 1 (see the module's docstring): lock ``channel_id`` if ``peer_id`` is one of its parties, and read
    what recording trades on it needs (``stored``: the stored trades of ``external_ids`` too); ``loaded`` reads the
    rows."""
    mine = [channel_id, peer_id, peer_id]
    lookup = [stored_statement(mine, external_ids)] if stored else []
    if _postgres():
        return [(LOCK_PG, mine), *lookup, (POSITIONS_PG, mine), (MARKS_PG, [sorted(markets), *mine])]
    # SQLite: one writer at a time, so no row lock
    return [(LOCK, mine), *lookup, (POSITIONS, mine), (MARKS.format(in_list=_in(markets)), [*sorted(markets), *mine])]


def stored_statement(mine: list, external_ids: list[str]) -> tuple:
    """The stored trades of ``external_ids`` on the channel ``mine`` (channel id, peer, peer) names."""
    if _postgres():
        return STORED_PG, [*mine, orjson.dumps(external_ids).decode()]
    return STORED.format(in_list=_in(external_ids)), [*mine, *external_ids]


def stored_trades(rows: list) -> dict[str, StoredTrade]:
    return {row[0]: StoredTrade(row[0], row[1], row[2], _decimal(row[3]), _decimal(row[4]), int(row[5]))
            for row in rows}


def loaded(rows: list, *, stored: bool = True) -> Loaded:
    """What ``load_statements`` read, as values and (unsaved-looking, keyed) model instances."""
    channel_rows, *trade_rows, position_rows, mark_rows = rows
    if not channel_rows:
        return Loaded(None, {}, [], {})
    channel = _channel(channel_rows[0])
    positions = []
    for row in position_rows:
        values = dict(zip(POSITION_COLUMNS, row))
        for name in (*BOOK, "settle_price"):
            values[name] = _decimal(values[name])
        positions.append(Position(channel=channel, **values))
    return Loaded(channel, stored_trades(trade_rows[0]) if stored else None, positions,
                  {market: _decimal(price) for market, price in mark_rows})


def _channel(row) -> Channel:
    values = dict(zip(CHANNEL_COLUMNS, row[:len(CHANNEL_COLUMNS)]))
    for name in ("margin_deposit", "closed_pnl"):
        values[name] = _decimal(values[name])
    # SQLite's is naive, in the connection's zone: made aware as Django's own converter does
    due = values["margin_call_due_at"]
    if due is not None and timezone.is_naive(due):
        values["margin_call_due_at"] = timezone.make_aware(due, connection.timezone)
    channel = Channel(**values)
    i_address, i_name, i_url, r_address, r_name, r_url = row[len(CHANNEL_COLUMNS):]
    channel.initiator = Peer(id=values["initiator_id"], address=i_address, name=i_name, url=i_url)
    channel.responder = Peer(id=values["responder_id"], address=r_address, name=r_name, url=r_url)
    return channel


def store_statements(*, channel: Channel, peer_id: int, new_positions: list[Position],
                     changed_positions: list[Position], trades: list[NewTrade], channel_fields: dict,
                     now) -> list:
    """Round trip 2 on PostgreSQL (see the module's docstring); ``assign_keys`` gives the new positions the keys
    it drew. Changed positions first: a position this request closes must be closed before a new one of its market
    opens (one open position per market, checked at once)."""
    statements = []
    if changed_positions:
        statements.append((UPDATE_POSITIONS, [now, _records([
            {"id": p.pk, "status": p.status, **{n: _numeric(getattr(p, n)) for n in BOOK}}
            for p in changed_positions])]))
    new_index = {id(p): k for k, p in enumerate(new_positions, start=1)}
    statements.append((INSERT, [
        _records([{"k": k, "market": p.market, "status": p.status, **{n: _numeric(getattr(p, n)) for n in BOOK}}
                  for k, p in enumerate(new_positions, start=1)]),
        channel.pk, now, now, channel.pk, peer_id, now, _records([
            {"n": n, "external_id": t.external_id, "market": t.market, "direction": t.direction,
             "initiator_direction": t.initiator_direction, "amount": _numeric(t.amount),
             "price": _numeric(t.price), "executed_at": t.executed_at,
             "position_id": None if id(t.position) in new_index else t.position.pk,
             "new_k": new_index.get(id(t.position))} for n, t in enumerate(trades)])]))
    if channel_fields:
        statements.append(_channel_update(channel))
    return statements


def assign_keys(results: list, new_positions: list[Position], changed_positions: list[Position]) -> None:
    for k, key in results[1 if changed_positions else 0]:
        new_positions[k - 1].pk = key


def _channel_update(channel: Channel) -> tuple[str, list]:
    """All of the fields a trade may change, as they are now (one statement text, whichever changed)."""
    db = connections[DEFAULT_DB_ALIAS]
    return UPDATE_CHANNEL, [*(_adapt(Channel, n, getattr(channel, n), db) for n in CHANNEL_FIELDS), channel.pk]


def _ended_cleanly(exc_type) -> bool:
    """A transaction that wrote nothing ends with COMMIT unless something failed (see ``pipeline.end``)."""
    return exc_type is None or issubclass(exc_type, DomainError)


def _already_recorded(exc: Exception) -> bool:
    """Whether ``exc`` is the trades' unique constraint refusing an external id recorded before."""
    return isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.constraint_name == TRADE_EXTERNAL_ID_UNIQUE


class _OwnTransaction:
    """What a session running its own transaction knows of it, and the statements that open it.

    Such a session (``own``) may leave the stored trades unread (``load(stored=False)``) and count on the trades'
    unique constraint to refuse an external id recorded before. ``store`` then answers False (the script
    failed; the transaction is in error), and the next script rolls it back and begins anew (``_opening``). Inside a
    caller's transaction nothing can be rolled back alone, so there (and on SQLite) the stored trades are always read.
    """

    own = True  # False: inside a caller's transaction, or on SQLite (``TradeSession``)
    begun = committed = failed = False
    unread = False  # this transaction's load left the stored trades unread: a refusal by the constraint is expected

    def _opening(self) -> list[pipeline.Statement]:
        """What the next script starts with: BEGIN when no transaction is open; after a failed store, ROLLBACK too."""
        if self.failed:
            self.failed = False
            return [ROLLBACK, BEGIN]
        if self.begun:
            return []
        self.begun = True
        return [BEGIN]

    def _load_script(self, stored: bool, request: dict) -> tuple[list[pipeline.Statement], bool]:
        """The load's script, and whether it reads the stored trades (always, unless the transaction is ``own``)."""
        stored = stored or not self.own
        self.unread = not stored
        opening = self._opening() if self.own else []
        return [*opening, *load_statements(**request, stored=stored)], stored

    @staticmethod
    def _stored_and_commit_script(*, peer_id: int, channel_id: str, external_ids: list[str]) -> list:
        return [stored_statement([channel_id, peer_id, peer_id], external_ids), COMMIT]

    def _stored_and_committed(self, results: list) -> dict[str, StoredTrade]:
        self.begun = False
        return stored_trades(results[0])

    def _store_failed(self, exc: psycopg.Error) -> bool:
        """False, after a store that ``exc`` ended: the constraint refused a trade taken for new (see above)."""
        if not (self.unread and _already_recorded(exc)):
            raise exc
        self.failed = True
        return False


class TradeSession(_OwnTransaction):
    """One request's transaction on the trade path, on a database thread (see the module's docstring)."""

    def __enter__(self):
        self.own = pipeline.own_transaction()
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
            pipeline.end(keep=_ended_cleanly(exc_type) and not self.failed)
        if exc_type is None and self.held:
            outbox.publish(list(self.held))  # committed: the notices, together (one layer message per peer)
        return False

    def _run(self, statements: list[pipeline.Statement]) -> list[list[tuple] | None]:
        return pipeline.run(statements)

    def load(self, *, stored: bool, **request) -> Loaded:
        statements, stored = self._load_script(stored, request)
        return loaded(self._run(statements), stored=stored)

    def stored_and_commit(self, **request) -> dict[str, StoredTrade]:
        """The stored trades of the request's external ids; the transaction, which wrote nothing, ends (``own``
        sessions only)."""
        return self._stored_and_committed(self._run(self._stored_and_commit_script(**request)))

    def store(self, *, channel: Channel, peer_id: int, new_positions: list[Position],
              changed_positions: list[Position], trades: list[NewTrade], channel_fields: dict) -> bool:
        """Write what the request decided, and commit when the session is its own. ``new_positions`` get their keys.
        False: an external id was recorded before, nothing was written (see ``_OwnTransaction``)."""
        now = _adapt(Trade, "recorded_at", timezone.now())
        if not _postgres():
            self._one_by_one(channel, peer_id, new_positions, changed_positions, trades, now)
            if channel_fields:
                self._run([_channel_update(channel)])
            return True
        statements = store_statements(channel=channel, peer_id=peer_id, new_positions=new_positions,
                                      changed_positions=changed_positions, trades=trades,
                                      channel_fields=channel_fields, now=now)
        if self.own:
            statements.append(COMMIT)
        try:
            results = self._run(statements)
        except psycopg.Error as exc:
            return self._store_failed(exc)
        assign_keys(results, new_positions, changed_positions)
        self.committed = self.own
        return True

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


class AsyncTradeSession(_OwnTransaction):
    """``TradeSession`` on the event loop (PostgreSQL; channels_app/aiodb.py): always its own transaction, on a
    connection of the loop's pool, the same statements in the same two round trips."""

    async def __aenter__(self):
        self._connection = (await aiodb.pool()).connection()
        self.conn = await self._connection.__aenter__()
        self._holding = outbox.holding()
        self.held = self._holding.__enter__()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self._holding.__exit__(exc_type, exc, tb)
        try:
            if self.begun and not self.committed:  # a replay, a refusal or an error: nothing was written
                try:
                    await self.conn.execute("COMMIT" if _ended_cleanly(exc_type) and not self.failed else "ROLLBACK")
                except psycopg.Error:
                    if exc_type is None:
                        raise  # else the connection broke with the error at hand: the pool drops it
        finally:
            await self._connection.__aexit__(exc_type, exc, tb)  # back to the pool (closed if broken)
        if exc_type is None and self.held:
            outbox.publish(list(self.held))  # committed: the notices, together (one layer message per peer)
        return False

    async def load(self, *, stored: bool, **request) -> Loaded:
        statements, stored = self._load_script(stored, request)
        try:
            return loaded(await pipeline.arun(self.conn, statements), stored=stored)
        except psycopg.OperationalError:
            if not self.conn.closed or statements[0] != BEGIN:  # only a script that opened the transaction
                raise
        # The server had dropped the pooled connection (a restart, a reaper) just before it was taken, too recently
        # for the pool's check to see: nothing was done on it, so once more, on another one.
        logger.warning("the database had closed a pooled connection; the request runs on another one")
        await self._connection.__aexit__(None, None, None)
        self._connection = (await aiodb.pool()).connection()
        self.conn = await self._connection.__aenter__()
        return loaded(await pipeline.arun(self.conn, statements), stored=stored)

    async def stored_and_commit(self, **request) -> dict[str, StoredTrade]:
        return self._stored_and_committed(await pipeline.arun(self.conn, self._stored_and_commit_script(**request)))

    async def store(self, *, channel: Channel, peer_id: int, new_positions: list[Position],
                    changed_positions: list[Position], trades: list[NewTrade], channel_fields: dict) -> bool:
        statements = store_statements(channel=channel, peer_id=peer_id, new_positions=new_positions,
                                      changed_positions=changed_positions, trades=trades,
                                      channel_fields=channel_fields,
                                      now=_adapt(Trade, "recorded_at", timezone.now()))
        try:
            results = await pipeline.arun(self.conn, [*statements, COMMIT])
        except psycopg.Error as exc:
            return self._store_failed(exc)
        assign_keys(results, new_positions, changed_positions)
        self.committed = True
        return True
