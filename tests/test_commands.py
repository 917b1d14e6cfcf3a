"""The operators' commands (README "Operators' commands"): through the same services as the protocol, audited,
reaching connected brokers as the same notifications; bad input is a clear error and a non-zero exit."""
import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from backoffice.audit import command_actor
from backoffice.management.commands._common import EXIT_BROKEN_PIPE
from backoffice.management.commands.export_trades import iso_utc
from backoffice.models import AuditEntry
from backoffice.permissions import BACKOFFICE_GROUP
from channels_app.models import Channel, MarkPrice, Position, Trade
from settlement.models import Settlement
from tests.client import EXECUTED_AT

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


def test_import_marks_reads_excels_utf8_with_its_byte_order_mark_and_refuses_other_encodings_in_one_line(tmp_path):
    excel = tmp_path / "excel.csv"
    excel.write_bytes(b"\xef\xbb\xbfmarket,price\r\nETH/USD,1800.5\r\n")  # Excel's "CSV UTF-8": BOM, CRLF
    out, _ = run("import_marks", str(excel))
    assert "1 mark(s) set" in out and str(MarkPrice.objects.get(market="ETH/USD").price) == "1800.5"
    assert MarkPrice.objects.get(market="ETH/USD").source == "import_marks excel.csv"  # its name: a path may be long
    out, _ = run("import_marks", "-", stdin="\ufeffmarket,price\nBTC/USD,65000\n")  # the same, piped in
    assert "1 mark(s) set" in out

    latin1 = tmp_path / "latin1.csv"  # Excel's plain "CSV" on a western Windows: cp1252, here an e acute
    latin1.write_bytes("market,price\nETH/USD,1900\nCAF\u00c9/USD,1\n".encode("cp1252"))
    with pytest.raises(CommandError) as refused:
        run("import_marks", str(latin1))
    assert str(refused.value) == ('line 3: byte 4 (0xc9) is not UTF-8: save the file as UTF-8 (in Excel: "CSV '
                                  'UTF-8") and import it again')
    assert str(MarkPrice.objects.get(market="ETH/USD").price) == "1800.5"  # nothing imported
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("market,price\nETH/USD,1\n".encode("utf-16"))
    with pytest.raises(CommandError, match="^line 1: byte 1 \\(0xff\\) is not UTF-8: save the file as UTF-8"):
        run("import_marks", str(utf16))

    env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)  # through manage.py, from standard input: the message, no traceback
    shown = subprocess.run([sys.executable, "manage.py", "import_marks", "-"], cwd=REPO, env=env,
                           input=latin1.read_bytes(), capture_output=True)
    stderr = shown.stderr.decode()
    assert shown.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("CommandError: line 3: byte 4 (0xc9) is not UTF-8: save the file as "
                                               'UTF-8 (in Excel: "CSV UTF-8") and import it again')


def test_a_reader_that_stops_early_ends_export_trades_and_channel_status_quietly(tmp_path):
    """``export_trades | head`` and ``channel_status ... | head``: no BrokenPipeError traceback, exit status 141 (as a
    shell tool killed by SIGPIPE)."""
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
    made = subprocess.run([sys.executable, "manage.py", "shell", "-c", SOME_TRADES], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    channel_id = made.stdout.split()[-1]
    for command, lines_read in ((["export_trades"], 1), (["export_trades", "--format", "json"], 1),
                                (["channel_status", channel_id], 0)):
        shown = subprocess.Popen([sys.executable, "manage.py", *command], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(lines_read):  # the export is larger than the pipe holds: its writes wait for this reader
            assert shown.stdout.readline()
        shown.stdout.close()  # the reader goes away (channel_status's few lines: before it wrote any)
        stderr = shown.stderr.read().decode()
        shown.stderr.close()
        assert shown.wait(timeout=60) == EXIT_BROKEN_PIPE, (command, stderr)
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    whole = subprocess.run([sys.executable, "manage.py", "channel_status", channel_id], cwd=REPO, env=env,
                           capture_output=True, text=True)
    assert whole.returncode == 0 and "trades: 1000" in whole.stdout  # a reader that reads it all: as before


SOME_TRADES = """
from decimal import Decimal
from eth_account import Account
from channels_app.models import Peer
from channels_app.services.trades import TradeInput, record_trades
from tests.factories import opened_channel
alice = Peer.objects.create(address=Account.create().address)
channel = opened_channel(initiator=alice, responder_address=Account.create().address, margin_deposit=Decimal(10**6))
for batch in range(10):
    record_trades(peer=alice, channel_id=channel.channel_id, trades=[
        TradeInput(f"t{batch}-{n}", "ETH/USD", "sell" if n % 2 else "buy", Decimal(1), Decimal(10), 1700000000)
        for n in range(100)])
print(channel.channel_id)
"""


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
    stored = [t async for t in Trade.objects.order_by("id")]
    for r, trade in zip(rows, stored):  # times as ISO 8601 UTC, the broker's Unix seconds beside
        assert r["executed_at"] == datetime.fromtimestamp(EXECUTED_AT, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert r["executed_at_unix"] == str(EXECUTED_AT)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", r["recorded_at"])
        assert datetime.fromisoformat(r["recorded_at"]) == trade.recorded_at
    assert iso_utc(datetime(2026, 11, 27, 10, 59, 13, tzinfo=UTC)) == "2026-11-27T10:59:13Z"

    target = tmp_path / "trades.json"
    out, err = await arun("export_trades", "--format", "json", "--channel", channel_id, "--output", str(target))
    exported = json.loads(target.read_text())
    assert [t["external_id"] for t in exported] == ["tiny", "b-1"] and exported[0]["amount"] == "0.000000000000000001"
    assert exported[0]["executed_at"] == rows[0]["executed_at"] and exported[0]["executed_at_unix"] == EXECUTED_AT
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


async def test_settle_under_the_manual_policy_says_a_clerk_must_accept_it_before_anything_is_paid(pair, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    out, _ = await arun("settle", channel_id, "--markets", "ETH/USD", "--method", "mock")
    settlement = await Settlement.objects.aget()
    assert settlement.state == "proposed"
    assert out.splitlines()[0] == (
        f"settlement {settlement.pk} of {channel_id}: proposed. Nothing is paid yet: the acceptance policy is manual "
        f"(SETTLEMENT_ACCEPT_POLICY), so a clerk must accept it in the back office (Settlements, settlement "
        f"{settlement.pk}) before anything is paid; a rejection reopens the positions.")


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
