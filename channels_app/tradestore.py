"""The trade path's database work in plain SQL, on the models' own tables: two round trips a request.

The ORM compiled six or seven statements a trade, each its own round trip, and that was most of the trade path's
time (bench/RESULTS.md). Here a request (``services.trades.record_trades``) takes two:

1. ``TradeSession.load``: lock the channel row, then read what the decision needs: the stored trades of the
   request's external ids, the live positions, the marks of their markets. On PostgreSQL one multi-statement
   query: each statement takes its snapshot when the one before it has finished, so every read sees what committed
   before the lock was granted (one statement that locked and read would read from a snapshot taken before it
   waited for the lock).
2. ``TradeSession.store``: the new positions and trades (multi-row INSERTs, the new positions' keys drawn from
   their sequence inside the statement), the changed positions (one UPDATE from a VALUES list), the channel's running
   total and zones; then COMMIT, in the same query.

On PostgreSQL outside any atomic block the session runs its own transaction: BEGIN travels with the first round
trip, COMMIT with the second, a refusal sends ROLLBACK, and the notices queued meanwhile are published together after
COMMIT (the outbox's ``holding``). Inside a caller's transaction (tests, or any caller's atomic block), and on
SQLite, the same functions run the same statements one at a time in Django's atomic block, with the outbox as
usual. Values go through the fields' own adapters, parameters are bound client-side by psycopg as everywhere in
Django (``connection.ops.compose_sql``), and the ORM stays for everything off this path.
"""
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from channels_app import outbox
from channels_app.models import LIVE_POSITION_STATUSES, Channel, MarkPrice, Peer, Position, Trade

CHANNEL, PEER, POSITION, TRADE, MARK = (m._meta.db_table for m in (Channel, Peer, Position, Trade, MarkPrice))
LIVE = "(" + ", ".join(f"'{status}'" for status in LIVE_POSITION_STATUSES) + ")"
CHANNEL_COLUMNS = ("id", "channel_id", "status", "initiator_id", "responder_id", "nonce", "margin_deposit",
                   "closed_pnl", "initiator_zone", "responder_zone", "margin_call_due_at", "responder_name",
                   "responder_url")
POSITION_COLUMNS = ("id", "market", "status", "quantity", "cost", "realized_pnl", "last_price", "settle_price")


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


def _in(values) -> tuple[str, list]:
    """``IN (...)`` for ``values`` (never empty: an empty list matches nothing)."""
    values = list(values) or [None]
    return "(" + ", ".join(["%s"] * len(values)) + ")", values


class TradeSession:
    """One request's transaction on the trade path (see the module's docstring)."""

    def __enter__(self):
        self.own = connection.vendor == "postgresql" and not connection.in_atomic_block
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
        if self.begun and not self.committed:  # a refusal, a replay, or an error: nothing of it stays
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK")
        if exc_type is None and self.held:
            outbox.publish(list(self.held))  # committed: the notices, together (one layer message per peer)
        return False

    def _run(self, statements: list[tuple[str, list]]) -> list[list[tuple] | None]:
        """Each statement's rows (None when it returns none; BEGIN and COMMIT give nothing): one round trip when
        the session is its own, else one statement at a time."""
        results = []
        with connection.cursor() as cursor:
            if self.own:
                cursor.execute("; ".join(connection.ops.compose_sql(sql, params) for sql, params in statements))
                while True:
                    results.append(cursor.fetchall() if cursor.description is not None else None)
                    if not cursor.nextset():
                        break
                return [rows for rows, (sql, _) in zip(results, statements) if sql not in ("BEGIN", "COMMIT")]
            for sql, params in statements:
                if sql not in ("BEGIN", "COMMIT"):
                    cursor.execute(sql, params)
                    results.append(cursor.fetchall() if cursor.description is not None else None)
        return results

    # --- round trip 1 -----------------------------------------------------------------------------------------
    def load(self, *, peer_id: int, channel_id: str, external_ids: list[str], markets: set[str]) -> Loaded:
        """Lock ``channel_id`` if ``peer_id`` is one of its parties, and read what recording trades on it needs."""
        lock = " FOR UPDATE OF c" if connection.vendor == "postgresql" else ""
        columns = ", ".join(f"c.{name}" for name in CHANNEL_COLUMNS)
        mine = (f"(SELECT id FROM {CHANNEL} WHERE channel_id = %s AND (initiator_id = %s OR responder_id = %s))",
                [channel_id, peer_id, peer_id])
        ids_in, ids = _in(external_ids)
        markets_in, market_list = _in(sorted(markets))
        statements = [
            (f"SELECT {columns}, i.address, i.name, i.url, r.address, r.name, r.url FROM {CHANNEL} c "
             f"JOIN {PEER} i ON i.id = c.initiator_id JOIN {PEER} r ON r.id = c.responder_id "
             f"WHERE c.channel_id = %s AND (c.initiator_id = %s OR c.responder_id = %s){lock}",
             [channel_id, peer_id, peer_id]),
            (f"SELECT external_id, market, initiator_direction, amount, price, executed_at FROM {TRADE} "
             f"WHERE channel_id = {mine[0]} AND external_id IN {ids_in}", [*mine[1], *ids]),
            (f"SELECT {', '.join(POSITION_COLUMNS)} FROM {POSITION} WHERE channel_id = {mine[0]} "
             f"AND status IN {LIVE} ORDER BY market, id", mine[1]),
            (f"SELECT market, price FROM {MARK} WHERE market IN {markets_in} OR market IN (SELECT market FROM "
             f"{POSITION} WHERE channel_id = {mine[0]} AND status IN {LIVE})", [*market_list, *mine[1]]),
        ]
        if self.own:
            statements.insert(0, ("BEGIN", []))
            self.begun = True
        channel_rows, trade_rows, position_rows, mark_rows = self._run(statements)
        if not channel_rows:
            return Loaded(None, {}, [], {})
        channel = self._channel(channel_rows[0])
        positions = []
        for row in position_rows:
            values = dict(zip(POSITION_COLUMNS, row))
            for name in ("quantity", "cost", "realized_pnl", "last_price", "settle_price"):
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
        """Write what the request decided, and commit when the session is its own. ``new_positions`` get their keys."""
        now = _adapt(Trade, "recorded_at", timezone.now())
        statements = []
        if connection.vendor == "postgresql":
            statements.append(self._postgres_inserts(channel, peer_id, new_positions, trades, now))
            if changed_positions:
                statements.append(self._postgres_position_update(changed_positions, now))
        else:
            self._one_by_one(channel, peer_id, new_positions, changed_positions, trades, now)
        if channel_fields:
            assignments = ", ".join(f"{name} = %s" for name in channel_fields)
            statements.append((f"UPDATE {CHANNEL} SET {assignments} WHERE id = %s",
                               [*(_adapt(Channel, n, v) for n, v in channel_fields.items()), channel.pk]))
        if self.own:
            statements.append(("COMMIT", []))
        results = self._run(statements) if statements else []
        if connection.vendor == "postgresql" and new_positions:
            for k, key in results[0]:
                new_positions[k - 1].pk = key
        self.committed = self.own

    @staticmethod
    def _book(position: Position) -> list:
        return [_adapt(Position, name, getattr(position, name))
                for name in ("quantity", "cost", "realized_pnl", "last_price")]

    def _postgres_inserts(self, channel, peer_id, new_positions, trades, now) -> tuple[str, list]:
        """One statement: the new positions' keys drawn from their sequence, the positions, then the trades, which
        refer to a stored position by its key and to a new one by its draw."""
        new_index = {id(p): k for k, p in enumerate(new_positions, start=1)}
        params: list = []
        ctes = []
        if new_positions:
            ctes.append(f"ids AS MATERIALIZED (SELECT k, nextval(pg_get_serial_sequence('{POSITION}', 'id')) AS id "
                        f"FROM generate_series(1, {len(new_positions)}) AS k)")
            rows = []
            params += [channel.pk, now, now]  # in the order of their placeholders: the SELECT's, then the VALUES'
            for k, position in enumerate(new_positions, start=1):
                rows.append("(%s::int, %s, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric)")
                params += [k, position.market, position.status, *self._book(position)]
            ctes.append(f"new_positions AS (INSERT INTO {POSITION} (id, channel_id, market, status, quantity, cost, "
                        "realized_pnl, last_price, opened_at, updated_at) SELECT ids.id, %s, v.market, v.status, "
                        f"v.quantity, v.cost, v.realized_pnl, v.last_price, %s, %s FROM (VALUES {', '.join(rows)}) "
                        "AS v(k, market, status, quantity, cost, realized_pnl, last_price) JOIN ids USING (k))")
        rows = []
        params += [channel.pk, peer_id, now]
        for n, trade in enumerate(trades):
            rows.append("(%s::int, %s, %s, %s, %s, %s::numeric, %s::numeric, %s::bigint, %s::bigint, %s::int)")
            new = new_index.get(id(trade.position))
            params += [n, trade.external_id, trade.market, trade.direction, trade.initiator_direction,
                       _adapt(Trade, "amount", trade.amount), _adapt(Trade, "price", trade.price), trade.executed_at,
                       None if new else trade.position.pk, new]
        position = "COALESCE(v.position_id, ids.id)" if new_positions else "v.position_id"
        insert = (f"INSERT INTO {TRADE} (channel_id, external_id, recorded_by_id, market, direction, "
                  "initiator_direction, amount, price, executed_at, recorded_at, position_id) "
                  "SELECT %s, v.external_id, %s, v.market, v.direction, v.initiator_direction, v.amount, v.price, "
                  f"v.executed_at, %s, {position} FROM (VALUES {', '.join(rows)}) AS v(n, external_id, market, "
                  "direction, initiator_direction, amount, price, executed_at, position_id, new_k)"
                  + (" LEFT JOIN ids ON ids.k = v.new_k" if new_positions else "")
                  + " ORDER BY v.n")  # the trades' keys in recording order
        if not new_positions:
            return insert, params
        return "WITH " + ", ".join(ctes) + f", new_trades AS ({insert}) SELECT k, id FROM ids ORDER BY k", params

    def _postgres_position_update(self, positions: list[Position], now) -> tuple[str, list]:
        rows, params = [], []
        for position in positions:
            rows.append("(%s::bigint, %s, %s::numeric, %s::numeric, %s::numeric, %s::numeric)")
            params += [position.pk, position.status, *self._book(position)]
        return (f"UPDATE {POSITION} AS p SET status = v.status, quantity = v.quantity, cost = v.cost, "
                "realized_pnl = v.realized_pnl, last_price = v.last_price, updated_at = %s "
                f"FROM (VALUES {', '.join(rows)}) AS v(id, status, quantity, cost, realized_pnl, last_price) "
                "WHERE p.id = v.id", [now, *params])

    def _one_by_one(self, channel, peer_id, new_positions, changed_positions, trades, now) -> None:
        """SQLite: in-process, one writer; a statement each costs no network, and ``executemany`` keeps a batch
        under SQLite's limit of bound variables a statement."""
        with connection.cursor() as cursor:
            for position in new_positions:
                cursor.execute(
                    f"INSERT INTO {POSITION} (channel_id, market, status, quantity, cost, realized_pnl, last_price, "
                    "opened_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    [channel.pk, position.market, position.status, *self._book(position), now, now])
                position.pk = cursor.fetchone()[0]
            cursor.executemany(
                f"INSERT INTO {TRADE} (channel_id, external_id, recorded_by_id, market, direction, "
                "initiator_direction, amount, price, executed_at, recorded_at, position_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(channel.pk, t.external_id, peer_id, t.market, t.direction, t.initiator_direction,
                  _adapt(Trade, "amount", t.amount), _adapt(Trade, "price", t.price), t.executed_at, now,
                  t.position.pk) for t in trades])
            cursor.executemany(
                f"UPDATE {POSITION} SET status = %s, quantity = %s, cost = %s, realized_pnl = %s, last_price = %s, "
                "updated_at = %s WHERE id = %s",
                [(p.status, *self._book(p), now, p.pk) for p in changed_positions])
