"""Hostile input (docs/reliability.md): generated frames of every event, mutated every way a broken or malicious
client could (wrong types, huge numbers, odd decimals, unicode, deep nesting, missing and extra fields, bad reqids,
junk text). Each gets exactly one reply, a spec-valid one, with its reqid; the connection stays open and answers a
valid request afterwards; and a frame that was refused changed nothing in the database.

At least MIN_FRAMES frames per run, deterministic (derandomized) so CI sees the same ones every time.
"""
import json
from decimal import Decimal
import time

import pytest
from asgiref.sync import async_to_sync
from eth_account import Account
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from operatorapi.events import Event
from channels_app.models import Channel, MarkPrice, Peer, Position, Trade
from settlement.models import Settlement
from tests.client import NOTIFICATION_EVENTS, Client
from tests.factories import opened_channel

MIN_FRAMES = 2000
EXAMPLES = 100
FRAMES_PER_EXAMPLE = (20, 30)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
odd_decimals = st.sampled_from([
    "", " ", "1e3", "1E-2", "1e999999", "NaN", "Infinity", "-0", "0", "-1", "+1", "0x10", "1_000", " 1", "1 ",
    "١٢٣", "１２", "1.2.3", ".5", "5.", "1" * 400, "0." + "0" * 300 + "1", "9" * 80 + ".5", "-0.0", "1/2",
])
odd_strings = st.one_of(odd_decimals, st.text(max_size=60), st.text(alphabet="\u202e\u0000\ufeff\U0001f600abc/",
                                                                     max_size=20))
reqids = st.one_of(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=-(2**70), max_value=-1),
                   st.integers(min_value=2**63, max_value=2**70), st.text(max_size=5), st.floats(), st.none())


def skeletons(channel_id: str, counterparty: str) -> dict[str, dict | None]:
    """A valid-looking ``data`` per request event: the starting point of every mutation."""
    trade = {"external_id": "fz", "market": "ETH/USD", "direction": "buy", "amount": "1", "price": "100",
             "executed_at": int(time.time())}
    return {
        Event.AUTHENTICATE: {"challenge": "00000000-0000-0000-0000-000000000000", "signature": "0x" + "11" * 65},
        Event.CHANNEL_JWT: {"channel_id": channel_id},
        Event.OPEN_CHANNEL: {"peer": {"address": counterparty, "name": "x"}, "margin_deposit": "10"},
        Event.RECORD_TRADE: {"channel_id": channel_id, **trade},
        Event.SUBSCRIBE_NOTIFICATIONS: None,
        Event.CLOSE_CHANNEL: {"channel_id": channel_id},
        Event.POSITIONS: {"channel_id": channel_id},
        Event.REQUEST_SETTLEMENT: {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                   "markets": ["ETH/USD"]},
        Event.RECORD_TRADES: {"channel_id": channel_id, "trades": [trade, {**trade, "external_id": "fz2"}]},
        Event.CHANNELS: {"status": "opened"},
        Event.SETTLEMENTS: {"channel_id": channel_id},
    }


def mutated(data, draw):
    """Break ``data`` one way or several: drop, add, retype or garble fields, at any depth."""
    if not isinstance(data, dict) or not data:
        return draw(json_values)
    data = dict(data)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        key = draw(st.sampled_from(sorted(data)))
        how = draw(st.sampled_from(["drop", "retype", "garble", "extra", "nest", "deep"]))
        if how == "drop":
            data.pop(key, None)
        elif how == "retype":
            data[key] = draw(json_values)
        elif how == "garble":
            data[key] = draw(odd_strings)
        elif how == "extra":
            data[draw(st.text(max_size=10))] = draw(json_values)
        elif how == "nest" and isinstance(data.get(key), (dict, list)):
            inner = data[key]
            data[key] = mutated(inner, draw) if isinstance(inner, dict) else [mutated(inner[0], draw)] if inner \
                else inner
        else:
            depth = draw(st.integers(min_value=1, max_value=200))
            data[key] = json.loads("[" * depth + "]" * depth)
        if not data:
            break
    return data


@st.composite
def frames(draw, channel_id: str, counterparty: str) -> str:
    """One frame as text: mostly a mutated request, sometimes raw junk."""
    kind = draw(st.sampled_from(["request"] * 8 + ["junk", "truncated"]))
    if kind == "junk":
        return draw(st.text(max_size=200))
    events = list(Event) + ["", "RECORD_TRADE", "record_trade ", "unknown", "error"]
    event = draw(st.sampled_from(events))
    frame = {"event": event if draw(st.integers(0, 9)) else draw(json_values), "reqid": draw(reqids)}
    base = skeletons(channel_id, counterparty).get(event)
    if draw(st.booleans()) or base is None:
        frame["data"] = mutated(base, draw) if base is not None else draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        frame.pop(draw(st.sampled_from(["event", "reqid"])))
    text = json.dumps(frame, ensure_ascii=draw(st.booleans()))
    if kind == "truncated":
        return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]
    return text


def expected_reqid(text: str) -> int:
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return 0
    reqid = frame.get("reqid") if isinstance(frame, dict) else None
    return reqid if type(reqid) is int and 0 <= reqid <= 2**63 - 1 else 0


def answered(text: str) -> bool:
    """Every frame is answered but a well-formed subscribe_notifications (the protocol gives it no reply; the
    next frame's reply, matched by reqid, shows none was sent)."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(frame, dict) and frame.get("event") == "subscribe_notifications"
                and expected_reqid(text) == frame.get("reqid") and type(frame.get("reqid")) is int)


def snapshot():
    """Everything a frame could change, as plain values."""
    return (
        sorted(Channel.objects.values_list("channel_id", "status")),
        sorted(Trade.objects.values_list("channel_id", "external_id", "amount", "price")),
        sorted(Position.objects.values_list("id", "status", "quantity", "cost", "realized_pnl")),
        sorted(Settlement.objects.values_list("id", "state")),
        sorted(MarkPrice.objects.values_list("market", "price")),
        Peer.objects.count(),
    )


async def exercise(account, texts: list[str], sent: list[int]) -> list[bool]:
    """Send each frame on one authenticated connection; returns, per frame, whether it was refused."""
    client = await Client(account).connect()
    try:
        await client.login()
        refused = []
        for text in texts:
            await client.send_raw(text=text or " ")  # (the test transport cannot send an empty text frame)
            sent.append(1)
            if not answered(text):
                refused.append(False)
                continue
            while True:
                try:
                    reply = await client.recv(timeout=5)  # spec-checked by the client
                except TimeoutError:
                    raise AssertionError(f"no reply to {text[:300]!r}") from None
                if reply["event"] not in NOTIFICATION_EVENTS:
                    break
            assert reply["reqid"] == expected_reqid(text), (text[:200], reply)
            refused.append(reply["event"] == "error")
            if reply["event"] == "error":
                assert reply["data"]["code"] != "internal_error", (text[:200], reply)
        # still open and answering
        still = await client.request("channels")
        assert still["event"] == "channels"
        return refused
    finally:
        await client.close()


@pytest.fixture
def fuzz_target(transactional_db):
    """Alice's channel with Bob (one trade on it), and Alice's key: the fuzzer speaks as Alice."""
    alice_account, bob_account = Account.create(), Account.create()
    alice = Peer.objects.create(address=alice_account.address)
    channel = opened_channel(initiator=alice, responder_address=bob_account.address,
                             margin_deposit=Decimal("1000"))
    return alice_account, channel.channel_id, Account.create().address


def test_generated_hostile_frames_get_one_reply_each_keep_the_connection_and_change_nothing(fuzz_target):
    account, channel_id, stranger = fuzz_target
    sent: list[int] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],  # CI reports the failing batch as generated
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(frames(channel_id, stranger), min_size=FRAMES_PER_EXAMPLE[0], max_size=FRAMES_PER_EXAMPLE[1]))
    def run(texts):
        before = snapshot()
        refused = async_to_sync(exercise)(account, texts, sent)
        if all(refused):
            assert snapshot() == before, "a refused frame changed state"

    run()
    assert len(sent) >= MIN_FRAMES, f"only {len(sent)} frames sent"
    print(f"fuzzed {len(sent)} frames")
