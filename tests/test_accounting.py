"""Pure accounting (channels_app/accounting.py, settlement/ledger.py): properties that must hold for any trades."""
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels_app import accounting, risk
from channels_app.accounting import apply_trade, mirror, replay, total_pnl
from channels_app.money import MONEY, fmt, parse_amount
from settlement.ledger import build_ledger, shortfall

decimals = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6, allow_nan=False,
                       allow_infinity=False)
trades = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), decimals, decimals), min_size=1, max_size=30)


def cash_flow_pnl(trade_list, mark):
    total = Decimal(0)
    for direction, amount, price in trade_list:
        signed = amount if direction == "buy" else -amount
        total = MONEY.add(total, MONEY.multiply(signed, MONEY.subtract(mark, price)))
    return total


@settings(max_examples=300, deadline=None)
@given(trades, decimals)
def test_total_pnl_equals_cash_flow_pnl_exactly(trade_list, mark):
    # average-cost rounding moves value between realized and unrealized, never creates or loses any
    assert total_pnl(replay(trade_list), mark) == cash_flow_pnl(trade_list, mark)


@settings(max_examples=300, deadline=None)
@given(trades, decimals)
def test_the_two_sides_pnl_sum_to_zero(trade_list, mark):
    book = replay(trade_list)
    assert MONEY.add(total_pnl(book, mark), total_pnl(mirror(book), mark)) == 0
    initiator, responder = accounting.margin_balances(Decimal(1000), total_pnl(book, mark))
    assert MONEY.add(initiator, responder) == 2000


def test_average_cost_examples():
    book = replay([("buy", Decimal(2), Decimal(100)), ("buy", Decimal(2), Decimal(110))])
    assert (book.quantity, book.cost, book.realized_pnl) == (4, 420, 0)
    book = apply_trade(book, "sell", Decimal(1), Decimal(120))
    assert (book.quantity, book.cost, book.realized_pnl) == (3, 315, 15)
    book = apply_trade(book, "sell", Decimal(5), Decimal(100))
    assert (book.quantity, book.cost, book.realized_pnl) == (-2, 200, 0)
    assert book.direction == "sell"


def test_a_non_terminating_average_rounds_to_36_places_and_cost_stays_consistent():
    book = replay([("buy", Decimal(1), Decimal(1)), ("buy", Decimal(1), Decimal(1)), ("buy", Decimal(1), Decimal(2))])
    book = apply_trade(book, "sell", Decimal(1), Decimal(2))
    # 3 held at cost 4: releasing 1 lot releases 4/3, rounded half-even at the 36th place
    assert book.cost == Decimal("2.666666666666666666666666666666666667")
    assert book.realized_pnl == Decimal("0.666666666666666666666666666666666667")
    # released = cost out = proceeds - realized: what stays in cost is exactly what realized did not take
    assert MONEY.subtract(book.cost, book.realized_pnl) == 4 - 2


def test_parse_and_format_decimal_strings():
    assert fmt(parse_amount("1.500")) == "1.5"
    assert fmt(parse_amount("100")) == "100"
    assert fmt(Decimal("-0")) == "0"
    assert fmt(parse_amount("0.000000000000000001")) == "0.000000000000000001"
    assert fmt(parse_amount("1" * 40)) == "1" * 40


def test_ledger_nets_per_quote_asset():
    ledger = build_ledger({"ETH/USD": Decimal("50"), "BTC/USD": Decimal("-80"), "ETH/USDT": Decimal("7.5")})
    assert ledger == [
        {"asset": "USD", "initiator_owes": "30", "responder_owes": "0"},
        {"asset": "USDT", "initiator_owes": "0", "responder_owes": "7.5"},
    ]


def test_a_ledger_lines_shortfall_is_what_the_deposit_does_not_cover():
    line = {"asset": "USD", "initiator_owes": "0", "responder_owes": "150"}
    assert shortfall(line, Decimal("100")) == "50"
    assert shortfall(line, Decimal("150")) == "0"
    assert shortfall({"asset": "USD", "initiator_owes": "100.000000000000000001", "responder_owes": "0"},
                     Decimal("100")) == "0.000000000000000001"


@given(st.decimals(min_value=1, max_value=10**9, places=6), st.decimals(min_value=-10**9, max_value=10**9, places=18),
       st.sampled_from(["0.10", "0.05", "0.25", "0.000001"]))
def test_a_zone_follows_the_balance_as_a_share_of_the_deposit_exactly(deposit, balance, rate_text):
    rate = risk.parse_rate(rate_text)
    zone = risk.zone_of(balance, deposit, rate)
    maintenance = MONEY.multiply(deposit, rate)
    assert zone == (risk.MarginZone.GREEN if balance >= MONEY.multiply(maintenance, 2) else
                    risk.MarginZone.ORANGE if balance >= maintenance else risk.MarginZone.RED)
    # the boundaries themselves: exactly 2 x and 1 x the rate are green and orange; a hair below is the next zone
    hair = Decimal("1e-30")
    assert risk.zone_of(MONEY.multiply(maintenance, 2), deposit, rate) == risk.MarginZone.GREEN
    assert risk.zone_of(MONEY.subtract(MONEY.multiply(maintenance, 2), hair), deposit, rate) == risk.MarginZone.ORANGE
    assert risk.zone_of(maintenance, deposit, rate) == risk.MarginZone.ORANGE
    assert risk.zone_of(MONEY.subtract(maintenance, hair), deposit, rate) == risk.MarginZone.RED


@given(st.decimals(min_value=-100, max_value=100, places=3), st.decimals(min_value=-100, max_value=100, places=3))
def test_a_trade_reduces_a_position_only_when_it_shrinks_it_without_flipping(before, after):
    shrinks = abs(after) < abs(before) and (after == 0 or (after > 0) == (before > 0))
    assert risk.reduces(before, after) == shrinks


@pytest.mark.parametrize("text", ["0", "0.5", "1", "-0.1", "abc", "NaN", "Infinity", ""])
def test_a_maintenance_rate_outside_0_to_half_is_refused(text):
    with pytest.raises(ValueError):
        risk.parse_rate(text)


def _within_limits(text: str) -> bool:
    """docs/protocol.md section 10, counted the long way: places and significant digits without trailing zeros after
    the point or leading zeros."""
    integer, _, fraction = text.lstrip("-").partition(".")
    fraction = fraction.rstrip("0")
    return len(fraction) <= 18 and len((integer + fraction).lstrip("0")) <= 40


@settings(max_examples=500, deadline=None)
@given(integer=st.text("0123456789", min_size=1, max_size=42), fraction=st.text("0123456789", max_size=24))
def test_parse_amount_limits_hold_at_every_length(integer, fraction):
    """The short-text path and the counted one agree: lengths around 20 characters (where parsing skips the
    counting) and around the limits are all drawn."""
    text = integer + ("." + fraction if fraction else "")
    value = Decimal(text)
    try:
        parsed = parse_amount(text)
    except ValueError:
        assert not _within_limits(text) or value <= 0
    else:
        assert _within_limits(text) and value > 0 and parsed == value
