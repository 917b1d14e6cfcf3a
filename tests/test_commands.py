"""The operators' commands (README "Operators' commands"): through the same services as the protocol, audited,
reaching connected brokers as the same notifications; bad input is a clear error and a non-zero exit."""
import csv
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from backoffice.audit import command_actor
from backoffice.models import AuditEntry
from backoffice.permissions import BACKOFFICE_GROUP
from channels_app.models import Channel, MarkPrice, Position
from settlement.models import Settlement

pytestmark = pytest.mark.django_db(transaction=True)
REPO = Path(__file__).resolve().parents[1]


def run(*args, stdin=None, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        sys.stdin, saved = io.StringIO(stdin), sys.stdin
    try:
        call_command(*args, stdout=out, stderr=err, **options)
    finally:
        if stdin is not None:
            sys.stdin = saved
    return out.getvalue(), err.getvalue()


arun = database_sync_to_async(run)


def fails(*args, match: str):
    with pytest.raises(CommandError, match=match):
        run(*args)


def test_every_command_has_help_and_a_bad_input_exits_non_zero_with_the_reason(tmp_path):
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    for command in ("operator_keys", "set_mark", "import_marks", "recompute_positions", "export_trades", "settle",
                    "channel_status", "create_backoffice_user"):
        shown = subprocess.run([sys.executable, "manage.py", command, "--help"], cwd=REPO, env=env,
                               capture_output=True, text=True)
        assert shown.returncode == 0 and "usage:" in shown.stdout, command
    refused = subprocess.run([sys.executable, "manage.py", "set_mark", "ETH/USD", "1.5e3"], cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 1
    assert "CommandError: price:" in refused.stderr and "Traceback" not in refused.stderr


def test_operator_keys_shows_the_identity_and_creates_missing_keys_only_when_asked(settings, tmp_path):
    from channels_app.identity import operator_keys

    settings.VAR_DIR = tmp_path
    settings.OPERATOR_PRIVATE_KEY = settings.JWT_PRIVATE_KEY = ""
    operator_keys.cache_clear()
    try:
        fails("operator_keys", match="--create")
        out, err = run("operator_keys", create=True)
        assert "creating the operator key" in err and (tmp_path / "operator_key.hex").exists()
        assert f"operator address: {operator_keys().address}" in out
        assert f"JWT kid: {operator_keys().kid}" in out and "BEGIN PUBLIC KEY" in out
        assert (tmp_path / "operator_key.hex").read_text().strip()[2:] not in out  # never the private key
        again, err = run("operator_keys")
        assert again == out and not err  # the same keys, reused
    finally:
        operator_keys.cache_clear()


async def test_set_mark_revalues_notifies_both_parties_and_is_audited(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    for client in (alice, bob):  # at the trade price: no PnL yet, margins unchanged
        await client.notification("position_notification")
    out, _ = await arun("set_mark", "ETH/USD", "112.5")
    assert "ETH/USD marked at 112.5; 1 channel(s) revalued" in out
    for client, mine, theirs in ((alice, "1025", "975"), (bob, "1025", "975")):
        note = await client.notification("position_notification", mark_price="112.5")
        assert note["data"]["pnl"] == ("25" if client is alice else "-25")
        margin = await client.notification("stream_notification", action="marginUpdated",
                                           initiator_margin_balance=mine)
        assert margin["data"]["follower_margin_balance"] == theirs
    entry = await AuditEntry.objects.aget(action="set_mark")
    assert entry.actor == command_actor() and entry.after == {"price": "112.5"}

    for bad, reason in ((("eth/usd", "1"), "not a market"), (("ETH/USD", "-1"), "price"),
                        (("ETH/USD", "1.0e2"), "price"), (("ETH/USD", "abc"), "price")):
        with pytest.raises(CommandError, match=reason):
            await arun("set_mark", *bad)
    assert str((await MarkPrice.objects.aget()).price) == "112.5"  # refused input changed nothing


def test_import_marks_is_all_or_nothing_and_names_every_bad_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("market,price\nETH/USD,1800.5\nbtc/usd,1\nSOL/USD,1e3\nETH/USD,1801\n")
    with pytest.raises(CommandError) as refused:
        run("import_marks", str(bad))
    message = str(refused.value)
    assert "3 bad line(s), nothing imported" in message
    assert "line 3: market" in message and "line 4: price" in message and "line 5: ETH/USD already on line 2" in message
    assert not MarkPrice.objects.exists()
    fails("import_marks", str(tmp_path / "missing.csv"), match="cannot read")
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("ETH/USD,1\n")
    fails("import_marks", str(headerless), match="line 1: the header")

    good = "market,price\nETH/USD,1800.000000000000000001\nBTC/USDT,65000\n"
    out, err = run("import_marks", "-", stdin=good)
    assert "2 mark(s) set" in out and "marks set: 2/2" in err
    assert {m.market: str(m.price) for m in MarkPrice.objects.all()} == {
        "ETH/USD": "1800.000000000000000001", "BTC/USDT": "65000"}
    assert AuditEntry.objects.filter(action="set_mark").count() == 2


async def test_recompute_positions_reports_drift_exits_non_zero_and_fixes_it(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    await alice.record(channel_id, external_id="2", direction="sell", amount="0.5", price="110")
    out, err = await arun("recompute_positions")
    assert "0 drifted position(s)" in out and "channel 1/1" in err

    await Position.objects.filter(market="ETH/USD").aupdate(quantity="7", cost="1")  # corrupt the stored book
    with pytest.raises(CommandError, match="1 position\\(s\\) and 0 channel total\\(s\\) differ from the ledger; "
                       "run with --fix"):
        await arun("recompute_positions", "--channel", channel_id)
    out, _ = await arun("recompute_positions", "--fix")
    assert "FIXED position" in out and "stored quantity 7 cost 1" in out
    assert "ledger says quantity 1.5 cost 150 realized 5" in out
    position = await Position.objects.aget(market="ETH/USD")
    assert (position.quantity, position.cost, position.realized_pnl) == (Decimal("1.5"), Decimal(150), Decimal(5))
    assert await AuditEntry.objects.filter(action="fix_position").acount() == 1
    out, _ = await arun("recompute_positions")
    assert "0 drifted position(s)" in out
    await alice.record(channel_id, external_id="3", direction="sell", amount="1.5", price="90")  # flat: closed
    assert (await Channel.objects.aget()).closed_pnl == -10  # 5 realized earlier, -15 now
    await Channel.objects.aupdate(closed_pnl="999")  # corrupt the channel's running total of closed PnL
    with pytest.raises(CommandError, match="0 position\\(s\\) and 1 channel total\\(s\\) differ"):
        await arun("recompute_positions")  # reported without --fix, and nothing changed
    assert (await Channel.objects.aget()).closed_pnl == 999
    out, _ = await arun("recompute_positions", "--fix")
    assert f"FIXED closed-PnL total of channel {channel_id}: stored 999; its closed positions sum to -10" in out
    assert (await Channel.objects.aget()).closed_pnl == -10  # re-summed from the closed positions
    assert await AuditEntry.objects.filter(action="fix_closed_pnl").acount() == 1
    with pytest.raises(CommandError, match="no channel"):
        await arun("recompute_positions", "--channel", "0x" + "ab" * 32)


async def test_export_trades_writes_exactly_what_was_recorded(pair, tmp_path):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="tiny", amount="0.000000000000000001", price="123456789012345678.5")
    await bob.record(channel_id, external_id="b-1", direction="buy", amount="3", price="99.25", market="BTC/USDT")
    out, _ = await arun("export_trades", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["external_id"], r["amount"], r["price"], r["direction"], r["initiator_direction"]) for r in rows] == [
        ("tiny", "0.000000000000000001", "123456789012345678.5", "buy", "buy"),
        ("b-1", "3", "99.25", "buy", "sell")]
    assert rows[1]["recorded_by"] == bob.address and rows[0]["channel_id"] == channel_id

    target = tmp_path / "trades.json"
    out, err = await arun("export_trades", "--format", "json", "--channel", channel_id, "--output", str(target))
    exported = json.loads(target.read_text())
    assert [t["external_id"] for t in exported] == ["tiny", "b-1"] and exported[0]["amount"] == "0.000000000000000001"
    assert "2 trade(s) written" in err
    with pytest.raises(CommandError, match="not a channel id"):
        await arun("export_trades", "--channel", "nope")


async def test_settle_runs_a_mock_settlement_both_parties_hear_and_channel_status_shows_it(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")
    out, _ = await arun("settle", channel_id, "--markets", "ETH/USD", "--method", "mock")
    assert ": accepted (the payment worker pays it" in out and "USD: initiator owes 0, responder owes 60" in out
    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        done = await client.notification("settlement_notification", state="completed")
        assert done["data"]["my_role"] == role
    settlement = await Settlement.objects.aget()
    assert settlement.requested_by_id is None
    assert await AuditEntry.objects.filter(action="propose_settlement", actor=command_actor()).aexists()

    status, _ = await arun("channel_status", channel_id)
    assert f"channel {channel_id}" in status and "status: opened" in status
    assert f"settlements (1):\n    {settlement.pk} completed mock markets ETH/USD" in status
    assert "ETH/USD settled" in status and "trades: 2" in status

    with pytest.raises(CommandError, match="invalid_market: no open position in ETH/USD"):
        await arun("settle", channel_id, "--markets", "ETH/USD", "--method", "mock")
    with pytest.raises(CommandError, match="payment_method_unavailable"):
        await arun("settle", channel_id, "--markets", "ETH/USD", "--method", "escrow")
    with pytest.raises(CommandError, match="no channel"):
        await arun("channel_status", "0x" + "cd" * 32)


def test_create_backoffice_user_makes_a_clerk_with_a_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLERK_PASSWORD", "a long and unguessable passphrase")
    out, _ = run("create_backoffice_user", "ann.clerk", "--email", "ann@example.com",
                 "--password-env", "CLERK_PASSWORD")
    assert "created back-office clerk ann.clerk" in out
    ann = User.objects.get(username="ann.clerk")
    assert ann.is_staff and not ann.is_superuser and ann.check_password("a long and unguessable passphrase")
    assert list(ann.groups.values_list("name", flat=True)) == [BACKOFFICE_GROUP]
    assert AuditEntry.objects.filter(action="create_backoffice_user", object_id=str(ann.pk)).exists()

    out, _ = run("create_backoffice_user", "bob.clerk")
    assert "changepassword bob.clerk" in out and not User.objects.get(username="bob.clerk").has_usable_password()
    fails("create_backoffice_user", "ann.clerk", match="already exists")
    fails("create_backoffice_user", "carl", "--password-env", "UNSET_VARIABLE_X", match="UNSET_VARIABLE_X")
    fails("create_backoffice_user", "bad name!", match="username")
