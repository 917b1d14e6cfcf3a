"""One typed schema per request event: the only place a client frame is validated.

``parse_reqid``, ``parse_event`` and ``parse_data`` turn a decoded frame into its reqid, event and typed data, or
raise ``ProtocolError`` with the code docs/protocol.md gives (``invalid_message`` naming the field,
``invalid_decimal``, ``invalid_market``, ...). Types are strict: a number where a string is due (or ``"1"`` where an
integer is due) is refused, never coerced. No text field may hold a control character (NUL included): refused
alike on both databases. The identifier formats are the domain's (channels_app.formats).
"""
import re
import time
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from eth_utils import to_checksum_address
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from channels_app.formats import ADDRESS_RE, CHANNEL_ID_RE, MARKET_RE, control_character
from channels_app.models import ChannelStatus
from channels_app.money import DecimalInputError, parse_amount
from channels_app.services.trades import TradeInput
from operatorapi.errors import ErrorCode, ProtocolError
from operatorapi.events import Event

MAX_REQID = 2**63 - 1
MAX_FUTURE_SECONDS = 300
MAX_BATCH_TRADES = 6765  # record_trades (docs/protocol.md section 8)
SIGNATURE_RE = re.compile(r"0x[0-9a-fA-F]{130}")
URL_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def _plain_text(value: str) -> str:
    found = control_character(value)
    if found:
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "contains the control character {char}", {"char": found})
    return value



def _positive_decimal(value: str) -> Decimal:
    try:
        return parse_amount(value)
    except DecimalInputError as exc:
        raise PydanticCustomError(ErrorCode.INVALID_DECIMAL, str(exc)) from None


def _market(value: str) -> str:
    if not MARKET_RE.fullmatch(value):
        raise PydanticCustomError(ErrorCode.INVALID_MARKET, "must be BASE/QUOTE, 1-16 upper-case letters or digits each")
    return value


def _channel_id(value: str) -> str:
    value = value.lower()
    if not CHANNEL_ID_RE.fullmatch(value):
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "must be 0x followed by 64 hex digits")
    return value


def _address(value: str) -> str:
    if not ADDRESS_RE.fullmatch(value):
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "must be 0x followed by 40 hex digits")
    return to_checksum_address(value)


def _signature(value: str) -> bytes:
    if not SIGNATURE_RE.fullmatch(value):
        raise PydanticCustomError(ErrorCode.INVALID_SIGNATURE, "must be 0x followed by 130 hex digits")
    return bytes.fromhex(value[2:])


def _url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in URL_SCHEMES or not parts.netloc:
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "must be an http, https, ws or wss URL")
    return value


def _not_in_future(value: int) -> int:
    if value > time.time() + MAX_FUTURE_SECONDS:
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "is more than 300 s in the future")
    return value


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "lists a market twice")
    return values


Text = Annotated[StrictStr, AfterValidator(_plain_text)]
PositiveDecimal = Annotated[StrictStr, AfterValidator(_positive_decimal)]
Market = Annotated[StrictStr, AfterValidator(_market)]
ChannelId = Annotated[StrictStr, AfterValidator(_channel_id)]
Address = Annotated[StrictStr, AfterValidator(_address)]
Int64 = Annotated[StrictInt, Field(gt=0, le=MAX_REQID)]


class Schema(BaseModel):
    # Unknown extra properties are ignored, as the spec allows.
    model_config = ConfigDict(extra="ignore", frozen=True)


class AuthenticateData(Schema):
    challenge: Annotated[Text, Field(max_length=64)]
    signature: Annotated[StrictStr, AfterValidator(_signature)]


class ChannelRef(Schema):
    """channel_jwt, close_channel and positions name only a channel."""

    channel_id: ChannelId


class PeerInfo(Schema):
    address: Address
    url: Annotated[Text, Field(max_length=200), AfterValidator(_url)] | None = None
    name: Annotated[Text, Field(max_length=64)] | None = None


class OpenChannelData(Schema):
    peer: PeerInfo
    margin_deposit: PositiveDecimal


class TradeFields(Schema):
    """One execution as the reporting party saw it: a ``record_trade`` without its channel, a batch item."""

    external_id: Annotated[Text, Field(min_length=1, max_length=128)]
    market: Market
    direction: Literal["buy", "sell"]
    amount: PositiveDecimal
    price: PositiveDecimal
    executed_at: Annotated[Int64, AfterValidator(_not_in_future)]

    def to_domain(self) -> TradeInput:
        return TradeInput(self.external_id, self.market, self.direction, self.amount, self.price, self.executed_at)


class RecordTradeData(TradeFields):
    channel_id: ChannelId


def _distinct_external_ids(trades: list[TradeFields]) -> list[TradeFields]:
    seen = set()
    for index, item in enumerate(trades):
        if item.external_id in seen:
            raise PydanticCustomError(ErrorCode.INVALID_MESSAGE, "trade {index} repeats external_id {external_id}",
                                      {"index": index, "external_id": item.external_id[:128]})
        seen.add(item.external_id)
    return trades


class RecordTradesData(Schema):
    channel_id: ChannelId
    trades: Annotated[list[TradeFields], Field(min_length=1, max_length=MAX_BATCH_TRADES),
                      AfterValidator(_distinct_external_ids)]


class ChannelsQuery(Schema):
    """``channels``: all of the peer's channels, or those in one status."""

    status: ChannelStatus | None = None


class RequestSettlementData(Schema):
    channel_id: ChannelId
    payment_method: Literal["escrow", "mock"]
    chain_id: Int64
    markets: Annotated[list[Market], Field(min_length=1, max_length=256), AfterValidator(_distinct)]


# event -> schema of its ``data`` (None: the event takes no data)
REQUEST_SCHEMAS: dict[Event, type[Schema] | None] = {
    Event.AUTHENTICATE: AuthenticateData,
    Event.CHANNEL_JWT: ChannelRef,
    Event.OPEN_CHANNEL: OpenChannelData,
    Event.RECORD_TRADE: RecordTradeData,
    Event.SUBSCRIBE_NOTIFICATIONS: None,
    Event.CLOSE_CHANNEL: ChannelRef,
    Event.POSITIONS: ChannelRef,
    Event.REQUEST_SETTLEMENT: RequestSettlementData,
    Event.RECORD_TRADES: RecordTradesData,
    Event.CHANNELS: ChannelsQuery,
    Event.SETTLEMENTS: ChannelRef,
}
_CODES_FROM_SCHEMA = frozenset({ErrorCode.INVALID_DECIMAL, ErrorCode.INVALID_MARKET, ErrorCode.INVALID_SIGNATURE})


def parse_reqid(frame: Any) -> int:
    """The frame's reqid, or raises (the error then goes out with reqid 0)."""
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a frame must be a JSON object")
    reqid = frame.get("reqid")
    if type(reqid) is not int or not 0 <= reqid <= MAX_REQID:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "reqid: must be an integer from 0 to 2^63-1")
    return reqid


def parse_event(frame: dict) -> Event:
    event = frame.get("event")
    if not isinstance(event, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "event: must be a string")
    try:
        event = Event(event)
    except ValueError:
        event = None
    if event not in REQUEST_SCHEMAS:
        raise ProtocolError(ErrorCode.UNKNOWN_EVENT, f"unknown event {frame['event'][:64]!r}")
    return event


def parse_data(event: Event, frame: dict) -> Schema | None:
    schema = REQUEST_SCHEMAS[event]
    if schema is None:
        return None
    payload = frame.get("data")
    if payload is None and "data" not in frame and not any(f.is_required() for f in schema.model_fields.values()):
        payload = {}  # every field optional (``channels``): the data object may be left out
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        raise _protocol_error(exc) from None


def _protocol_error(exc: ValidationError) -> ProtocolError:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(["data", *(str(part) for part in first["loc"])])
    code = first["type"] if first["type"] in _CODES_FROM_SCHEMA else ErrorCode.INVALID_MESSAGE
    message = first["msg"]
    if first["type"] == "model_type":
        message = "must be an object"
    return ProtocolError(ErrorCode(code), f"{field}: {message}")
