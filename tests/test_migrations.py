"""The migrations match the models, whatever the interpreter's hash seed (a model option built from a set once
came out in a different order per process, so each ``makemigrations`` wrote a spurious migration)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", ["0", "1", "2", "3"])
def test_the_migrations_are_complete_and_stable(seed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PYTHONHASHSEED=seed, VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="operatorapi.settings")
    result = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_the_closed_pnl_migration_sums_each_channels_closed_unsettled_positions():
    import importlib

    from django.apps import apps
    from eth_account import Account

    from channels_app.models import Channel, Peer, Position

    migration = importlib.import_module("channels_app.migrations.0002_channel_closed_pnl")
    alice, bob = (Peer.objects.create(address=Account.create().address) for _ in range(2))
    channel = Channel.objects.create(channel_id="0x" + "1" * 64, initiator=alice, responder=bob, nonce=0,
                                     margin_deposit="100", status="opened")
    for status, realized in (("closed", "0.000000000000000001"), ("closed", "-2.5"), ("settled", "7"),
                             ("open", "3"), ("closed", "123456789012345678.5")):
        Position.objects.create(channel=channel, market="ETH/USD", status=status, realized_pnl=realized,
                                last_price="1")
    migration.sum_closed_positions(apps, None)
    channel.refresh_from_db()
    assert str(channel.closed_pnl) == "123456789012345676.000000000000000001"


def _channel_id_indexes_and_keys(table: str) -> tuple[list[str], list[str]]:
    """The plain indexes on exactly ``channel_id`` of ``table``, and the foreign keys from it to the channels."""
    from django.db import connection

    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexes = [name for name, info in constraints.items() if info["index"] and not info["unique"]
               and not info["primary_key"] and not info["foreign_key"] and info["columns"] == ["channel_id"]]
    keys = [name for name, info in constraints.items()
            if info["foreign_key"] == ("channels_app_channel", "id") and info["columns"] == ["channel_id"]]
    return indexes, keys


@pytest.mark.django_db(transaction=True)
def test_the_redundant_channel_indexes_go_and_come_back_and_the_foreign_keys_stay():
    from django.core.management import call_command
    from django.db import connection

    tables = ("channels_app_trade", "channels_app_position")
    try:
        call_command("migrate", "channels_app", "0005", verbosity=0)
        for table in tables:
            indexes, keys = _channel_id_indexes_and_keys(table)
            assert len(indexes) == 1 and len(keys) == 1, (table, indexes, keys)
        call_command("migrate", "channels_app", "0006", verbosity=0)
    finally:
        call_command("migrate", verbosity=0)
    for table in tables:
        indexes, keys = _channel_id_indexes_and_keys(table)
        # the trade's own key on its channel is replaced on PostgreSQL (0007, the next test)
        expected = 0 if table == "channels_app_trade" and connection.vendor == "postgresql" else 1
        assert indexes == [] and len(keys) == expected, (table, indexes, keys)


def _trade_keys() -> dict[tuple[str, ...], tuple[str, str]]:
    """The trade table's foreign keys: columns -> (table, column) referred to (the first, for a composite)."""
    from django.db import connection

    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "channels_app_trade")
    return {tuple(info["columns"]): info["foreign_key"] for info in constraints.values() if info["foreign_key"]}


@pytest.mark.django_db(transaction=True)
def test_a_trades_channel_and_position_are_checked_together_on_postgresql_and_apart_on_sqlite():
    """0007 replaces the trade's keys on its channel and on its position by one on both (PostgreSQL), and 0007
    undone puts them back; SQLite keeps the two it had (channels_app/migrations/0007)."""
    from django.core.management import call_command
    from django.db import connection

    apart = {("channel_id",): ("channels_app_channel", "id"), ("position_id",): ("channels_app_position", "id"),
             ("recorded_by_id",): ("channels_app_peer", "id")}
    together = {("position_id", "channel_id"): ("channels_app_position", "id"),
                ("recorded_by_id",): ("channels_app_peer", "id")}
    try:
        call_command("migrate", "channels_app", "0006", verbosity=0)
        assert _trade_keys() == apart
    finally:
        call_command("migrate", verbosity=0)
    assert _trade_keys() == (together if connection.vendor == "postgresql" else apart)
