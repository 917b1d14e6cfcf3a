"""Error codes of the protocol (docs/protocol.md section 2) and the one place that formats an error frame."""
import enum

from channels_app.events import Event


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
    INVALID_DECIMAL = "invalid_decimal"
    INVALID_MARKET = "invalid_market"
    DUPLICATE_TRADE = "duplicate_trade"
    SETTLEMENT_IN_PROGRESS = "settlement_in_progress"
    OPEN_POSITIONS = "open_positions"
    MARGIN_EXCEEDED = "margin_exceeded"
    PAYMENT_METHOD_UNAVAILABLE = "payment_method_unavailable"
    RATE_LIMITED = "rate_limited"
    CONNECTION_LIMIT = "connection_limit"
    INTERNAL_ERROR = "internal_error"


class ProtocolError(Exception):
    """A refusal the client is told about: a code and a human sentence. Nothing was changed."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def channel_not_found() -> ProtocolError:
    # One sentence for "no such channel" and "not yours": an outsider learns nothing from the difference.
    return ProtocolError(ErrorCode.CHANNEL_NOT_FOUND, "channel not found")


def error_frame(reqid: int, code: ErrorCode, message: str) -> dict:
    return {"event": Event.ERROR, "reqid": reqid, "data": {"error": message, "code": str(code)}}
