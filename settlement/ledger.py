"""The settlement ledger as a pure function: cash-settled per QUOTE asset, net, from both sides."""
from decimal import Decimal

from channels_app.money import MONEY, ZERO, fmt


def quote_asset(market: str) -> str:
    return market.split("/", 1)[1]


def build_ledger(initiator_pnl_by_market: dict[str, Decimal]) -> list[dict]:
    """Per QUOTE asset, what the initiator owes the responder and vice versa (net: one of the two is zero)."""
    per_asset: dict[str, Decimal] = {}
    for market, pnl in initiator_pnl_by_market.items():
        asset = quote_asset(market)
        per_asset[asset] = MONEY.add(per_asset.get(asset, ZERO), pnl)
    return [
        {
            "asset": asset,
            "initiator_owes": fmt(MONEY.minus(net) if net < 0 else ZERO),
            "responder_owes": fmt(net if net > 0 else ZERO),
        }
        for asset, net in sorted(per_asset.items())
    ]


def shortfall(line: dict, deposit: Decimal) -> str:
    """What a ledger line bills beyond the debtor's deposit (a mark jumped past red): still owed, but the margin
    does not cover it. "0" when the deposit covers the bill (docs/protocol.md section 7)."""
    owed = max(Decimal(line["initiator_owes"]), Decimal(line["responder_owes"]))
    return fmt(MONEY.subtract(owed, deposit) if owed > deposit else ZERO)
