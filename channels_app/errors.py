"""The one refusal of the domain: ``DomainError(code, message)``. Nothing was changed when it is raised.

Each entry point maps it to its own output: the WebSocket transport to an ``error`` frame (operatorapi.errors), the
admin to a message, a management command to a ``CommandError``. The codes are the domain's; most have the same
name on the wire (docs/protocol.md section 2).
"""
import enum


class Code(enum.StrEnum):
    INVALID_INPUT = "invalid_input"  # a value the rules refuse (the sentence names it)
    INVALID_DECIMAL = "invalid_decimal"
    INVALID_MARKET = "invalid_market"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_CHALLENGE = "invalid_challenge"
    PEER_DISABLED = "peer_disabled"
    CONNECTION_LIMIT = "connection_limit"
    LOCKED_OUT = "locked_out"  # too many failed authentications from one client address
    CHANNEL_NOT_FOUND = "channel_not_found"
    INVALID_CHANNEL_STATE = "invalid_channel_state"
    INVALID_SETTLEMENT_STATE = "invalid_settlement_state"
    SETTLEMENT_NOT_FOUND = "settlement_not_found"
    DUPLICATE_TRADE = "duplicate_trade"
    SETTLEMENT_IN_PROGRESS = "settlement_in_progress"
    OPEN_POSITIONS = "open_positions"
    MARGIN_EXCEEDED = "margin_exceeded"
    MARGIN_CALL = "margin_call"  # a party is in orange or red: only trades that reduce the position
    PAYMENT_METHOD_UNAVAILABLE = "payment_method_unavailable"


class DomainError(Exception):
    """A refusal by the domain's rules: a code and a human sentence."""

    def __init__(self, code: Code, message: str, *, item: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.item = item  # which item of a batch was refused (its index), if the request was a batch

    def __repr__(self):
        return f"DomainError({self.code!s}, {self.message!r}, item={self.item})"


def channel_not_found() -> DomainError:
    # One sentence for "no such channel" and "not yours": an outsider learns nothing from the difference.
    return DomainError(Code.CHANNEL_NOT_FOUND, "channel not found")
