"""Statements sent to the database together: on PostgreSQL one round trip, each statement prepared once.

The hot paths (trades: channels_app/tradestore.py; admission: services/auth.py) run their own transaction outside
Django's atomic blocks so that BEGIN and COMMIT travel with their statements: ``run`` sends a list of statements in
psycopg's pipeline mode, server-side bound and prepared on the connection (their texts never vary, so they are
planned once), and waits once. Elsewhere (SQLite; inside a caller's transaction) the same statements run one at a
time through Django's cursor. BEGIN and COMMIT in the list are then skipped: Django's atomic block has them.
"""
from django.db import connection

BEGIN, COMMIT = ("BEGIN", []), ("COMMIT", [])


def own_transaction() -> bool:
    """Whether a hot path may run its own transaction here: PostgreSQL, and no caller's transaction around it."""
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def run(statements: list[tuple[str, list]], *, prepare: frozenset[str] = frozenset()) -> list[list[tuple] | None]:
    """Each statement's rows (None when it returns none; BEGIN and COMMIT give nothing): pipelined when the caller
    runs its own transaction (``own_transaction``), else one statement at a time. The statements whose text is in
    ``prepare`` are prepared on the connection (once; PostgreSQL then skips planning them)."""
    results = []
    if own_transaction():
        import psycopg  # PostgreSQL only

        connection.ensure_connection()
        raw = connection.connection
        cursors = []
        with raw.pipeline():
            for statement in statements:
                control = statement in (BEGIN, COMMIT)
                cursor = psycopg.Cursor(raw)  # server-side binding: the statement is prepared once
                cursor.execute(*statement, prepare=statement[0] in prepare)
                cursors.append((control, cursor))
        for control, cursor in cursors:
            if not control:
                results.append(cursor.fetchall() if cursor.description is not None else None)
            cursor.close()
        return results
    with connection.cursor() as cursor:
        for statement in statements:
            if statement not in (BEGIN, COMMIT):
                cursor.execute(*statement)
                results.append(cursor.fetchall() if cursor.description is not None else None)
    return results


def end(*, keep: bool) -> None:
    """End a transaction begun with ``BEGIN`` in ``run`` that wrote nothing (a replay, a refusal): COMMIT when
    nothing failed (it keeps nothing: it releases the locks), ROLLBACK after an error. psycopg forgets every
    prepared statement on a ROLLBACK it sees (``DEALLOCATE ALL``), so the ordinary refusal does not send one."""
    with connection.cursor() as cursor:
        cursor.execute("COMMIT" if keep else "ROLLBACK")
