"""The WebSocket endpoint: decode a frame, validate it, dispatch it by event to a handler, send the reply.

Handlers are a line or two each: the rules live in the domain's services (writes) and selectors (reads), run in one
call on the database thread of the channel (``operatorapi.dbthreads``), so the reply goes out only after the state
change committed. A domain refusal (``DomainError``) becomes an ``error`` frame with its wire code
(``operatorapi.errors``); replies are built by ``operatorapi.payloads``.
Requests on one connection are handled one at a time, in the order they arrived, by the connection's own request
task (``handle_requests``), beside Channels' dispatch rather than in it: Channels hands a consumer its next message
from the channel layer only once the message at hand is done, one per turn, so on a connection that kept a request
in flight its notifications fell ever further behind (bench/RESULTS.md). Notifications that arrive while a request
is being handled are held and sent right after its reply: the reply first, then the notifications, in the order
they came.
"""
import asyncio
import json
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import orjson
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from channels_app import aiodb, selectors
from channels_app.errors import DomainError
from channels_app.identity import operator_keys
from channels_app.services import auth, channels, presence, tokens, trades
from operatorapi import heartbeat, payloads, schemas, shutdown
from operatorapi.dbthreads import in_turn, on_thread_of, to_the_end
from operatorapi.dispatch import NoDatabaseDispatchMixin
from operatorapi.errors import ErrorCode, ProtocolError, error_frame
from operatorapi.events import Event
from operatorapi.publisher import peer_group
from operatorapi.ratelimit import TokenBucket
from settlement import selectors as settlement_selectors
from settlement import services as settlement_services

logger = logging.getLogger(__name__)
request_log = logging.getLogger("operatorapi.requests")  # one line per request

NO_REPLY = object()  # a handler that answers nothing (subscribe_notifications) or has answered itself
END_OF_FRAMES = object()  # queued by ``disconnect``: the request task handles what came before, then ends
CLOSE_AUTH_FAILED = 4403
CLOSE_RATE_LIMITED = 4429  # also: connection limit reached, authentication locked out
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_INTERNAL_ERROR = 1011


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class OperatorConsumer(NoDatabaseDispatchMixin, AsyncJsonWebsocketConsumer):
    peer = None
    challenge: auth.Challenge | None = None
    auth_failures = 0
    subscription_reqid: int | None = None
    handling = False  # a request is being handled (graceful shutdown closes after its reply; notifications wait)
    going_away = False  # closed for shutdown: frames still arriving are not processed
    left = False  # ``leave`` has begun: what the connection held is being given up
    signing_in = False  # an ``authenticate`` is on its database thread

    # --- connection lifecycle -------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:  # cancelled (the server gave up on it) rather than ended by ``disconnect``: its requests too
            requests = getattr(self, "requests", None)
            if requests is not None and not requests.done():
                requests.cancel()
            if requests is not None and not self.left:  # and what ``disconnect`` did not get to undo
                await to_the_end(self.leave())

    async def connect(self):
        self.frames: asyncio.Queue = asyncio.Queue()  # received, not handled yet (``handle_requests``)
        self.held: list[dict] = []  # notification frames waiting for the reply at hand
        self.requests = asyncio.ensure_future(self.handle_requests())
        self.bucket = TokenBucket(settings.RATE_LIMIT_PER_SECOND, settings.RATE_LIMIT_BURST)
        self.auth_timer = asyncio.get_running_loop().call_later(
            settings.AUTH_TIMEOUT_SECONDS, lambda: asyncio.ensure_future(self.close_unauthenticated())
        )
        await self.accept()
        if shutdown.draining():  # this process is stopping: reconnect (to another one)
            await self.go_away()
            return
        shutdown.register(self)
        heartbeat.ensure_running()  # renews this process's presence leases (idempotent)
        await self.send_json({"event": Event.VERSION, "reqid": 0, "data": {"version": settings.API_VERSION}})
        await self.send_json(
            {"event": Event.IDENTITY_ADDRESS, "reqid": 0, "data": {"address": operator_keys().address}}
        )
        await self.send_challenge(0)

    async def disconnect(self, code):
        self.auth_timer.cancel()
        self.frames.put_nowait(END_OF_FRAMES)  # frames received before the close are handled first, as before it
        await self.requests
        await to_the_end(self.leave())  # once begun, whatever comes

    async def leave(self) -> None:
        """Undo what the connection holds: its group, its presence row, its place among the process's connections.
        Called by ``disconnect`` and, when the server cancelled the connection before that was done (Daphne does,
        10 s after the client left, if its last requests still run), by ``__call__``: else the presence row stayed,
        renewed by this process's heartbeat for its whole life, counted against ``MAX_CONNECTIONS_PER_PEER``, and a
        draining process waited its full grace for the connection. The row is deleted on the thread its sign-in ran
        on, after it: a connection cancelled while its sign-in ran has no peer yet, and the sign-in writes the row
        all the same."""
        self.left = True
        try:
            if self.peer is not None and self.subscription_reqid is not None:
                await self.channel_layer.group_discard(peer_group(self.peer.address), self.channel_name)
            if self.peer is not None or self.signing_in:
                await on_thread_of(self.channel_name, presence.disconnected)(channel_name=self.channel_name)
        finally:
            shutdown.unregister(self)  # after the presence row is gone: a draining process waits for this

    def drain(self) -> None:
        """The process is stopping: close now if idle, else right after the current request's reply."""
        asyncio.ensure_future(self.go_away_if_idle())

    async def go_away_if_idle(self) -> None:
        if not self.handling and not self.going_away:
            await self.go_away()

    async def go_away(self) -> None:
        self.going_away = True
        await self.close(code=shutdown.CLOSE_CODE)

    async def send_challenge(self, reqid: int) -> None:
        self.challenge = auth.Challenge.issue()
        await self.send_json({"event": Event.CHALLENGE, "reqid": reqid, "data": {"challenge": self.challenge.value}})

    # --- frames ---------------------------------------------------------------------------------------------
    @classmethod
    async def decode_json(cls, text_data):
        # Floats never appear: a JSON number with a point becomes a Decimal (and then fails the strict schema).
        return json.loads(text_data, parse_float=Decimal, parse_constant=_reject_constant)

    @classmethod
    async def encode_json(cls, content):
        # orjson writes what json.dumps(separators=(",", ":"), ensure_ascii=False) writes, in a fifteenth of the
        # time (bench/RESULTS.md); an integer beyond 64 bits, which it refuses, goes to the stdlib.
        try:
            return orjson.dumps(content).decode()
        except orjson.JSONEncodeError:
            return json.dumps(content, separators=(",", ":"), ensure_ascii=False)

    async def receive(self, text_data=None, bytes_data=None):
        if not self.going_away:  # sent after our close: not processed, so not half done
            self.frames.put_nowait(text_data)

    async def handle_requests(self) -> None:
        """The connection's request task: each frame in turn, then its held notifications (see the module's
        docstring); ends at ``END_OF_FRAMES``."""
        while (text_data := await self.frames.get()) is not END_OF_FRAMES:
            if self.going_away:
                continue
            self.handling = True
            try:
                await self.handle_frame(text_data)
            except Exception:  # handle_frame answers every failure itself; this is a bug: nothing may hang
                logger.exception("the request task failed; closing the connection")
                await self.close(code=CLOSE_INTERNAL_ERROR)
            finally:
                while self.held:  # what arrives meanwhile joins the list: the order holds
                    frames, self.held = self.held, []
                    for frame in frames:
                        await self.send_json(frame)
                self.handling = False
            if shutdown.draining():
                await self.go_away_if_idle()

    async def handle_frame(self, text_data: str | None) -> None:
        started = time.perf_counter()
        reqid = 0
        event = None
        self.outcome = "ok"
        within_limit = self.bucket.take()  # every frame counts, garbage included
        if not within_limit and self.bucket.refused_in_a_row > settings.RATE_LIMIT_CLOSE_AFTER:
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        try:
            frame, size = await self.read_frame(text_data)
            reqid = schemas.parse_reqid(frame)
            if size > settings.MAX_FRAME_BYTES and frame.get("event") != Event.RECORD_TRADES:
                raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"frame exceeds {settings.MAX_FRAME_BYTES} bytes "
                                    f"(only record_trades may be up to {settings.MAX_BATCH_FRAME_BYTES})")
            if not within_limit:
                raise ProtocolError(ErrorCode.RATE_LIMITED, f"more than {settings.RATE_LIMIT_PER_SECOND:g} "
                                    "requests per second on this connection; slow down")
            event = schemas.parse_event(frame)
            await self.handle_request(reqid, event, frame)
        except DomainError as exc:
            exc = ProtocolError.from_domain(exc, item_field="data.trades" if event == Event.RECORD_TRADES else None)
            await self.send_error(reqid, exc.code, exc.message)
        except ProtocolError as exc:
            await self.send_error(reqid, exc.code, exc.message)
        except Exception:
            correlation_id = uuid.uuid4().hex[:12]
            logger.exception("internal error %s on %s (reqid %s)", correlation_id, event, reqid)
            await self.send_error(reqid, ErrorCode.INTERNAL_ERROR, f"internal error; reference {correlation_id}")
        request_log.info("request", extra={
            "event": event, "reqid": reqid, "peer": self.peer.address if self.peer else None,
            "client": self.client_address, "outcome": self.outcome,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        })

    async def read_frame(self, text_data: str | None) -> tuple[Any, int]:
        """The decoded frame and its size in bytes, within the size limit of the connection's state."""
        if text_data is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "binary frames are not supported; send JSON text")
        # Only an authenticated peer's record_trades may exceed MAX_FRAME_BYTES; nobody else's big frame is even
        # parsed. (UTF-8 takes at most 4 bytes a character: short frames need no encoding to be measured.)
        limit = settings.MAX_BATCH_FRAME_BYTES if self.peer is not None else settings.MAX_FRAME_BYTES
        size = len(text_data)
        if size <= limit and size * 4 > settings.MAX_FRAME_BYTES:
            size = len(text_data.encode())
        if size > limit:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"frame exceeds {limit} bytes")
        try:
            frame = await self.decode_json(text_data)
        except ValueError:
            raise ProtocolError(ErrorCode.INVALID_JSON, "frame is not valid JSON") from None
        except RecursionError:
            raise ProtocolError(ErrorCode.INVALID_JSON, "frame is nested too deeply") from None
        return frame, size

    async def send_error(self, reqid: int, code: ErrorCode, message: str) -> None:
        self.outcome = str(code)
        await self.send_json(error_frame(reqid, code, message))

    async def handle_request(self, reqid: int, event: Event, frame: dict) -> None:
        if event == Event.AUTHENTICATE:
            await self.authenticate(reqid, frame)
            return
        if self.peer is None:
            raise ProtocolError(ErrorCode.NOT_AUTHENTICATED, "authenticate first")
        data = schemas.parse_data(event, frame)
        result = await self.handlers[event](self, reqid, data)
        if result is not NO_REPLY:
            await self.reply(reqid, event, result)

    async def reply(self, reqid: int, event: Event, data: dict | None = None) -> None:
        frame = {"event": event, "reqid": reqid}
        if data is not None:
            frame["data"] = data
        await self.send_json(frame)

    # --- authentication -------------------------------------------------------------------------------------
    async def authenticate(self, reqid: int, frame: dict) -> None:
        if self.peer is not None:
            raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "this connection is already authenticated")
        outstanding, self.challenge = self.challenge, None  # single-use, whatever the outcome
        checked = self.check_credentials(outstanding, frame)  # here, not on the database thread (no I/O)
        self.signing_in = True  # stays so if the connection is cancelled meanwhile (``leave``)
        try:
            self.peer = await on_thread_of(self.channel_name, self.sign_in)(checked)
        except (ProtocolError, DomainError) as exc:
            self.signing_in = False
            if isinstance(exc, DomainError):
                exc = ProtocolError.from_domain(exc)
            await self.send_error(reqid, exc.code, exc.message)
            if exc.code in (ErrorCode.CONNECTION_LIMIT, ErrorCode.RATE_LIMITED):  # locked out: retrying is futile
                await self.close(code=CLOSE_RATE_LIMITED)
                return
            self.auth_failures += 1
            if self.auth_failures >= settings.MAX_AUTH_FAILURES:
                await self.close(code=CLOSE_AUTH_FAILED)
            else:
                await self.send_challenge(reqid)
            return
        self.signing_in = False
        self.auth_failures = 0
        self.auth_timer.cancel()
        await self.reply(reqid, Event.AUTHENTICATE)

    @staticmethod
    def check_credentials(outstanding: auth.Challenge | None, frame: dict) -> auth.Signature | ProtocolError:
        """What the frame's credentials say, found without I/O: the signature's verdict, or why the request is too
        malformed to check (``sign_in`` acts on either after the lock-out check)."""
        try:
            data = schemas.parse_data(Event.AUTHENTICATE, frame)
        except ProtocolError as exc:
            return exc
        return auth.Signature.check(outstanding=outstanding, challenge=data.challenge, signature=data.signature)

    def sign_in(self, checked: auth.Signature | ProtocolError):
        """(database thread) The peer admitted on the checked credentials; a malformed request counts as a failed
        authentication too."""
        if isinstance(checked, ProtocolError):
            auth.refuse(client_ip=self.client_ip)
            raise checked
        return auth.sign_in(signature=checked, client_ip=self.client_ip, channel_name=self.channel_name,
                            client_address=self.client_address)

    async def close_unauthenticated(self):
        """AUTH_TIMEOUT_SECONDS passed without a successful ``authenticate``."""
        if self.peer is None:
            await self.send_json(error_frame(0, ErrorCode.NOT_AUTHENTICATED, "not authenticated within "
                                             f"{settings.AUTH_TIMEOUT_SECONDS:g} s; closing"))
            await self.close(code=CLOSE_AUTH_TIMEOUT)

    # --- request handlers: (reqid, validated data) -> reply data | None | NO_REPLY --------------------------
    async def open_channel(self, reqid, data):
        channel = await on_thread_of(self.peer.address, channels.open_channel)(
            initiator=self.peer, responder_address=data.peer.address, margin_deposit=data.margin_deposit,
            responder_name=data.peer.name or "", responder_url=data.peer.url or "",
        )
        return {"channel_id": channel.channel_id}

    async def record_trade(self, reqid, data):
        recorded = await self.recording(data.channel_id, [data.to_domain()])
        return {"channel_id": recorded.channel.channel_id, "external_id": recorded.external_ids[0]}

    async def record_trades(self, reqid, data):
        recorded = await self.recording(data.channel_id, [item.to_domain() for item in data.trades])
        return {"channel_id": recorded.channel.channel_id, "external_ids": recorded.external_ids}

    async def recording(self, channel_id: str, items: list[trades.TradeInput]) -> trades.Recorded:
        """On the event loop where the database allows it (channels_app/aiodb.py), else on the channel's thread;
        either way to its end, notifications included, if the server cancels the request meanwhile."""
        if aiodb.enabled():
            return await to_the_end(self.recording_in_turn(channel_id, items))
        return await on_thread_of(channel_id, trades.record_trades)(peer=self.peer, channel_id=channel_id,
                                                                    trades=items)

    async def recording_in_turn(self, channel_id: str, items: list[trades.TradeInput]) -> trades.Recorded:
        async with in_turn(channel_id):
            return await trades.arecord_trades(peer=self.peer, channel_id=channel_id, trades=items)

    async def positions(self, reqid, data):
        role, book = await on_thread_of(data.channel_id, selectors.live_positions)(
            peer=self.peer, channel_id=data.channel_id
        )
        return {"channel_id": data.channel_id,
                "positions": [{"position": payloads.position_payload(p, role)} for p in book]}

    async def channel_jwt(self, reqid, data):
        token = await on_thread_of(data.channel_id, tokens.issue_channel_jwt)(
            peer=self.peer, channel_id=data.channel_id
        )
        return {"jwt": token}

    async def close_channel(self, reqid, data):
        channel = await on_thread_of(data.channel_id, channels.close_channel)(
            peer=self.peer, channel_id=data.channel_id
        )
        return {"channel_id": channel.channel_id}

    async def list_channels(self, reqid, data):
        found = await on_thread_of(self.peer.address, selectors.peer_channels)(peer=self.peer, status=data.status)
        return {"channels": [payloads.channel_payload(channel, role) for role, channel in found]}

    async def settlements(self, reqid, data):
        role, found = await on_thread_of(data.channel_id, settlement_selectors.channel_settlements)(
            peer=self.peer, channel_id=data.channel_id
        )
        return {"channel_id": data.channel_id,
                "settlements": [payloads.settlement_history_payload(s, role) for s in found]}

    async def subscribe_notifications(self, reqid, data):
        await self.channel_layer.group_add(peer_group(self.peer.address), self.channel_name)
        self.subscription_reqid = reqid
        return NO_REPLY

    async def request_settlement(self, reqid, data):
        settlement = await on_thread_of(data.channel_id, settlement_services.request_settlement)(
            peer=self.peer, channel_id=data.channel_id, payment_method=data.payment_method, chain_id=data.chain_id,
            markets=list(data.markets),
        )
        await self.reply(reqid, Event.REQUEST_SETTLEMENT)
        try:  # the proposal is committed and answered; acceptance follows, then the payment worker's steps
            await on_thread_of(data.channel_id, settlement_services.apply_accept_policy)(settlement_pk=settlement.pk)
        except Exception:
            logger.exception("settlement %s: the acceptance policy failed; the payment worker's round accepts it",
                             settlement.pk)
        return NO_REPLY

    handlers = {
        Event.OPEN_CHANNEL: open_channel,
        Event.RECORD_TRADE: record_trade,
        Event.POSITIONS: positions,
        Event.CHANNEL_JWT: channel_jwt,
        Event.CLOSE_CHANNEL: close_channel,
        Event.SUBSCRIBE_NOTIFICATIONS: subscribe_notifications,
        Event.REQUEST_SETTLEMENT: request_settlement,
        Event.RECORD_TRADES: record_trades,
        Event.CHANNELS: list_channels,
        Event.SETTLEMENTS: settlements,
    }

    # --- messages from the peer's groups ---------------------------------------------------------------------
    @property
    def client_ip(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else ""

    @property
    def client_address(self) -> str:
        client = self.scope.get("client")
        return f"{client[0]}:{client[1]}" if client else ""

    async def peer_disabled(self, message):
        """Back office disabled this peer: its connections close (docs/protocol.md section 3)."""
        await self.close(code=CLOSE_AUTH_FAILED)

    async def notify(self, message):
        """A transaction's notifications for this peer (operatorapi.publisher), in order; held while a request is
        being handled, so that its reply goes first."""
        if self.subscription_reqid is None:
            return
        frames = [{"event": frame["event"], "reqid": self.subscription_reqid, "data": frame["data"]}
                  for frame in message["frames"]]
        if self.handling:
            self.held.extend(frames)
            return
        for frame in frames:
            await self.send_json(frame)
