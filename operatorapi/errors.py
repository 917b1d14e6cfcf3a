"""Error codes of the protocol (docs/protocol.md section 2) and the one place that formats an error frame.

Refusals come from two places: the transport's own (``ProtocolError``: a frame too large, not JSON, not valid,
rate limited, ...) and the domain's (``channels_app.errors.DomainError``), whose codes map here to wire codes.
"""
import enum

from channels_app.errors import Code, DomainError
from operatorapi.events import Event


class ErrorCode(enum.StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_EVENT = "unknown_event"
    MESSAGE_TOO_LARGE = "message_too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_CHALLENGE = "invalid_challenge"
    PEER_DISABLED = "peer_disabled"
    CHANNEL_NOT_FOUND = "channel_not_found"
    INVALID_CHANNEL_STATE = "invalid_channel_state"
    INVALID_SETTLEMENT_STATE = "invalid_settlement_state"
    INVALID_DECIMAL = "invalid_decimal"
    INVALID_MARKET = "invalid_market"
    DUPLICATE_TRADE = "duplicate_trade"
    SETTLEMENT_IN_PROGRESS = "settlement_in_progress"
    OPEN_POSITIONS = "open_positions"
    MARGIN_EXCEEDED = "margin_exceeded"
    MARGIN_CALL = "margin_call"
    PAYMENT_METHOD_UNAVAILABLE = "payment_method_unavailable"
    RATE_LIMITED = "rate_limited"
    CONNECTION_LIMIT = "connection_limit"
    INTERNAL_ERROR = "internal_error"


# Every domain code has its wire code; a domain code missing here fails the import (and so every test).
WIRE_CODES: dict[Code, ErrorCode] = {
    Code.INVALID_INPUT: ErrorCode.INVALID_MESSAGE,
    Code.INVALID_DECIMAL: ErrorCode.INVALID_DECIMAL,
    Code.INVALID_MARKET: ErrorCode.INVALID_MARKET,
    Code.INVALID_SIGNATURE: ErrorCode.INVALID_SIGNATURE,
    Code.INVALID_CHALLENGE: ErrorCode.INVALID_CHALLENGE,
    Code.PEER_DISABLED: ErrorCode.PEER_DISABLED,
    Code.CONNECTION_LIMIT: ErrorCode.CONNECTION_LIMIT,
    Code.LOCKED_OUT: ErrorCode.RATE_LIMITED,
    Code.CHANNEL_NOT_FOUND: ErrorCode.CHANNEL_NOT_FOUND,
    Code.INVALID_CHANNEL_STATE: ErrorCode.INVALID_CHANNEL_STATE,
    Code.INVALID_SETTLEMENT_STATE: ErrorCode.INVALID_SETTLEMENT_STATE,
    Code.SETTLEMENT_NOT_FOUND: ErrorCode.INVALID_MESSAGE,
    Code.DUPLICATE_TRADE: ErrorCode.DUPLICATE_TRADE,
    Code.SETTLEMENT_IN_PROGRESS: ErrorCode.SETTLEMENT_IN_PROGRESS,
    Code.OPEN_POSITIONS: ErrorCode.OPEN_POSITIONS,
    Code.MARGIN_EXCEEDED: ErrorCode.MARGIN_EXCEEDED,
    Code.MARGIN_CALL: ErrorCode.MARGIN_CALL,
    Code.PAYMENT_METHOD_UNAVAILABLE: ErrorCode.PAYMENT_METHOD_UNAVAILABLE,
}
if set(WIRE_CODES) != set(Code):
    raise ImportError(f"domain codes without a wire code: {sorted(set(Code) - set(WIRE_CODES))}")


class ProtocolError(Exception):
    """A refusal the client is told about: a code and a human sentence. Nothing was changed."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_domain(cls, exc: DomainError, *, item_field: str | None = None) -> "ProtocolError":
        """The domain's refusal on the wire; ``item_field`` (``data.trades``) names a refused batch item."""
        message = exc.message
        if item_field is not None and exc.item is not None:
            message = f"{item_field}[{exc.item}]: {message}"
        return cls(WIRE_CODES[exc.code], message)


def error_frame(reqid: int, code: ErrorCode, message: str) -> dict:
    return {"event": Event.ERROR, "reqid": reqid, "data": {"error": message, "code": str(code)}}
