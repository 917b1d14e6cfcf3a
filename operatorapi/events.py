"""Every event name of the protocol, spelled once (stream actions: channels_app.notices.StreamAction)."""
import enum


class Event(enum.StrEnum):
    # server -> client on connect
    VERSION = "version"
    IDENTITY_ADDRESS = "identity_address"
    CHALLENGE = "challenge"
    # requests (the reply carries the same event)
    AUTHENTICATE = "authenticate"
    CHANNEL_JWT = "channel_jwt"
    OPEN_CHANNEL = "open_channel"
    RECORD_TRADE = "record_trade"
    SUBSCRIBE_NOTIFICATIONS = "subscribe_notifications"
    CLOSE_CHANNEL = "close_channel"
    POSITIONS = "positions"
    REQUEST_SETTLEMENT = "request_settlement"
    # extensions (docs/protocol.md section 8)
    RECORD_TRADES = "record_trades"
    CHANNELS = "channels"
    SETTLEMENTS = "settlements"
    # notifications
    STREAM_NOTIFICATION = "stream_notification"
    POSITION_NOTIFICATION = "position_notification"
    SETTLEMENT_NOTIFICATION = "settlement_notification"
    ERROR = "error"
