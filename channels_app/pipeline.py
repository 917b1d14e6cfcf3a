"""Statements sent to the database together: on PostgreSQL one round trip, the hot ones prepared once per connection.

The hot paths (trades: channels_app/tradestore.py; admission: services/auth.py) send each of their round trips as
one script: the statements, BEGIN and COMMIT included when the path runs its own transaction, in one simple query
with the values bound as literals by psycopg (``ClientCursor``), whose results come back one per statement. In
READ COMMITTED each statement of a script still reads from a snapshot of its own, taken when it starts: a read after
a row lock sees what the lock's previous holder committed.

A ``Prepared`` statement is prepared with SQL's ``PREPARE`` the first time a connection meets it (one round trip,
once per connection) and run with ``EXECUTE``, so PostgreSQL plans it once per connection (planning the trade path's
locking join took longer than running it). Once, that is, if its generic plan costs no more than the five custom
ones PostgreSQL makes first: a statement whose estimate depends on a value (a count, a size) is planned again at
every execution, so none is written that way (tests/test_trade_path.py reads the counts). And a generic plan is made
from the statistics of its day: a statement that a small table's statistics would turn into a scan of a table that
then grows is left unprepared (tradestore's STORED). psycopg itself prepares nothing (``prepare_threshold`` is
None): it would ``DEALLOCATE ALL`` after any ROLLBACK it sees, these statements with its own. (A prepared statement
lives in its session: behind a proxy that pools by transaction, such as PgBouncer's transaction mode, connect in
session mode.)

Inside a caller's transaction (tests, any caller's atomic block) BEGIN and COMMIT are left out of the script: Django's
atomic block has them. On SQLite the statements run one at a time through Django's cursor, as written.
"""
import re
import weakref
from dataclasses import dataclass

import psycopg
from django.db import connection
from psycopg.pq import ExecStatus


@dataclass(frozen=True)
class Prepared:
    """A statement (``%s`` for each value) that PostgreSQL prepares under ``name`` on each connection."""

    name: str
    sql: str

    def __post_init__(self):
        if _registry.setdefault(self.name, self) != self:
            raise ValueError(f"two statements are prepared as {self.name!r}")

    def prepare(self) -> str:
        numbers = iter(range(1, self.sql.count("%s") + 1))
        return f"PREPARE {self.name} AS " + re.sub("%s", lambda _: f"${next(numbers)}", self.sql)

    def execute(self, count: int) -> str:
        return f"EXECUTE {self.name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {self.name}"


_registry: dict[str, Prepared] = {}  # every Prepared statement, by name: a connection prepares them all at once
Statement = tuple["Prepared | str", list]
BEGIN, COMMIT, ROLLBACK = ("BEGIN", []), ("COMMIT", []), ("ROLLBACK", [])
_CONTROL = (BEGIN, COMMIT, ROLLBACK)

# The names prepared on each psycopg connection (sync or async), for as long as it lives; None: unknown (a
# preparation failed part way: the next one deallocates everything first).
_prepared_on: "weakref.WeakKeyDictionary[object, set[str] | None]" = weakref.WeakKeyDictionary()


def own_transaction() -> bool:
    """Whether a hot path may run its own transaction here: PostgreSQL, and no caller's transaction around it."""
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def _script(statements: list[Statement], own: bool) -> tuple[str, list, list[bool]]:
    """One simple query for ``statements``: its text, its values, and which of its results are kept."""
    parts, values, kept = [], [], []
    for statement, params in statements:
        if (statement, params) in _CONTROL and not own:
            continue
        parts.append(statement.execute(len(params)) if isinstance(statement, Prepared) else statement)
        values.extend(params)
        kept.append((statement, params) not in _CONTROL)
    return ";\n".join(parts), values, kept


def _preparing(conn, statements: list[Statement]) -> tuple[str | None, set[str]]:
    """The script that prepares on ``conn`` every ``Prepared`` statement it has not prepared yet, when ``statements``
    need one of them (None: nothing to do), and the names to record as prepared once it has run (``_prepared``).
    All at once: one round trip in a connection's life."""
    names = _prepared_on.get(conn, set())
    if names is not None and all(s.name in names for s, _ in statements if isinstance(s, Prepared)):
        return None, names
    missing = [s for name, s in _registry.items() if name not in (names or ())]
    reset = ["DEALLOCATE ALL"] if names is None else []  # a preparation failed part way: start from nothing
    return ";\n".join([*reset, *(s.prepare() for s in missing)]), (names or set()) | {s.name for s in missing}


def _prepared(conn, names: set[str] | None) -> None:
    """Record what ``conn`` has prepared: ``names``, or None when a preparation failed (unknown)."""
    _prepared_on[conn] = names


def _returns_rows(cursor) -> bool:
    """Whether the cursor's current result is rows. Read from the result's status: ``cursor.description`` would
    build a column object for each of its columns first (the locking join has 19), 40 us of a trade's load
    (bench/RESULTS.md)."""
    return cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK


def _results(cursor, kept: list[bool]) -> list[list[tuple] | None]:
    results = []
    for keep in kept:
        if keep:
            results.append(cursor.fetchall() if _returns_rows(cursor) else None)
        cursor.nextset()
    return results


def run(statements: list[Statement]) -> list[list[tuple] | None]:
    """Each statement's rows (None when it returns none; BEGIN and COMMIT give nothing), in one round trip on
    PostgreSQL (after the first, on a connection, that prepares its ``Prepared`` statements)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            results = []
            for statement, params in statements:
                if (statement, params) not in _CONTROL:
                    cursor.execute(statement.sql if isinstance(statement, Prepared) else statement, params)
                    results.append(cursor.fetchall() if cursor.description is not None else None)
            return results

    own = own_transaction()
    connection.ensure_connection()
    raw = connection.connection
    preparing, names = _preparing(raw, statements)
    sql, values, kept = _script(statements, own)
    with psycopg.ClientCursor(raw) as cursor:
        if preparing:
            _prepared(raw, None)
            cursor.execute(preparing)
            _prepared(raw, names)
        cursor.execute(sql, values)
        return _results(cursor, kept)


async def arun(conn, statements: list[Statement]) -> list[list[tuple] | None]:
    """``run`` on an async connection of the trade path's pool (channels_app/aiodb.py), its own transaction."""
    preparing, names = _preparing(conn, statements)
    sql, values, kept = _script(statements, own=True)
    async with psycopg.AsyncClientCursor(conn) as cursor:
        if preparing:
            _prepared(conn, None)
            await cursor.execute(preparing)
            _prepared(conn, names)
        await cursor.execute(sql, values)
        results = []
        for keep in kept:  # the results are all here: fetching them waits on nothing
            if keep:
                results.append(await cursor.fetchall() if _returns_rows(cursor) else None)
            cursor.nextset()
        return results


def end(*, keep: bool) -> None:
    """End a transaction begun with ``BEGIN`` in ``run`` that wrote nothing (a replay, a refusal): COMMIT when
    nothing failed (it keeps nothing: it releases the locks), ROLLBACK after an error."""
    with connection.cursor() as cursor:
        cursor.execute("COMMIT" if keep else "ROLLBACK")
