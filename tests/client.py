"""A broker's client for tests: speaks the protocol in-process (``Client``, channels' WebsocketCommunicator) or
over a real socket to a running Daphne (``NetworkClient``, the ``websockets`` library).

Every frame received is checked against the published spec (tests/spec.py). Replies are matched to requests by
reqid; notifications that arrive in between are kept in ``notes`` for the test to read.
"""
import asyncio
import itertools
import json
import time

from channels.testing import WebsocketCommunicator
from eth_account import Account
from eth_account.messages import encode_defunct

from operatorapi.asgi import application
from tests.spec import assert_server_frame

NOTIFICATION_EVENTS = {"stream_notification", "position_notification", "settlement_notification"}
SUBSCRIPTION_REQID = 9000
# One execution time for the whole run: a replay must repeat a trade's content exactly, and a default taken per
# call would differ whenever the two calls straddle a second.
EXECUTED_AT = int(time.time())


def sign(account, text: str) -> str:
    return account.sign_message(encode_defunct(text=text)).signature.to_0x_hex()


def trade(channel_id, external_id="t1", market="ETH/USD", direction="buy", amount="1", price="100", **extra):
    return {
        "channel_id": channel_id,
        "external_id": external_id,
        "market": market,
        "direction": direction,
        "amount": amount,
        "price": price,
        "executed_at": extra.pop("executed_at", EXECUTED_AT),
        **extra,
    }


class ProtocolClient:
    """The protocol steps, over any transport: subclasses provide ``_open``, ``_close``, ``_receive``, ``_send``."""

    def __init__(self, account=None):
        self.account = account or Account.create()
        self.address = self.account.address
        self.reqids = itertools.count(1)
        self.notes: list[dict] = []
        self.greeting: list[dict] = []
        self.challenge = None
        self.logged_in = False

    # --- transport ------------------------------------------------------------------------------------------
    async def connect(self):
        await self._open()
        self.greeting = [await self.recv() for _ in range(3)]
        self.challenge = self.greeting[2]["data"]["challenge"]
        return self

    async def close(self):
        await self._close()

    async def recv(self, timeout=3) -> dict:
        frame = json.loads(await self._receive(timeout))
        assert_server_frame(frame)
        return frame

    async def send(self, event, data=None, reqid=None) -> int:
        reqid = next(self.reqids) if reqid is None else reqid
        frame = {"event": event, "reqid": reqid}
        if data is not None:
            frame["data"] = data
        await self._send(text=json.dumps(frame))
        return reqid

    async def send_raw(self, text=None, binary=None):
        await self._send(text=text, binary=binary)

    async def reply(self, reqid: int, timeout=3) -> dict:
        """The next non-notification frame, which must answer ``reqid``."""
        while True:
            frame = await self.recv(timeout)
            if frame["event"] in NOTIFICATION_EVENTS:
                self.notes.append(frame)
                continue
            assert frame["reqid"] == reqid, f"expected the reply to {reqid}, got {frame}"
            return frame

    async def request(self, event, data=None, reqid=None, timeout=3) -> dict:
        return await self.reply(await self.send(event, data, reqid), timeout)

    async def ok(self, event, data=None, timeout=3) -> dict:
        frame = await self.request(event, data, timeout=timeout)
        assert frame["event"] == event, frame
        return frame

    async def error(self, event, data=None, code=None) -> dict:
        frame = await self.request(event, data)
        assert frame["event"] == "error", frame
        if code is not None:
            assert frame["data"]["code"] == code, frame
        return frame["data"]

    async def expect_nothing(self, timeout=0.3):
        try:
            frame = await self._receive(timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return
        raise AssertionError(f"unexpected frame {frame}")

    # --- protocol steps -------------------------------------------------------------------------------------
    async def login(self):
        await self.ok("authenticate", {"challenge": self.challenge, "signature": sign(self.account, self.challenge)})
        self.logged_in = True
        return self

    async def subscribe(self):
        await self.send("subscribe_notifications", reqid=SUBSCRIPTION_REQID)
        return self

    async def notification(self, event=None, timeout=3, **match) -> dict:
        """The next notification (of ``event``, whose data has ``match``), buffered or arriving."""
        def fits(frame):
            return (event is None or frame["event"] == event) and all(
                frame["data"].get(k) == v for k, v in match.items()
            )

        for i, frame in enumerate(self.notes):
            if fits(frame):
                return self.notes.pop(i)
        while True:
            frame = await self.recv(timeout)
            assert frame["event"] in NOTIFICATION_EVENTS, f"expected a notification, got {frame}"
            if fits(frame):
                return frame
            self.notes.append(frame)

    async def open_channel(self, responder, deposit="1000", *, accept=True, **peer_extra) -> str:
        """Propose a channel to ``responder``; a logged-in responder then consents (``accept``) by sending
        ``open_channel`` back with the same deposit, which opens it (docs/protocol.md section 4)."""
        frame = await self.ok("open_channel", {"peer": {"address": responder.address, **peer_extra},
                                               "margin_deposit": deposit})
        channel_id = frame["data"]["channel_id"]
        if accept and getattr(responder, "logged_in", False):
            assert await responder.accept_channel(self, deposit) == channel_id
        return channel_id

    async def accept_channel(self, initiator, deposit="1000") -> str:
        frame = await self.ok("open_channel", {"peer": {"address": initiator.address}, "margin_deposit": deposit})
        return frame["data"]["channel_id"]

    async def record(self, channel_id, **kwargs) -> dict:
        return await self.ok("record_trade", trade(channel_id, **kwargs))

    async def positions(self, channel_id) -> dict[str, dict]:
        frame = await self.ok("positions", {"channel_id": channel_id})
        return {p["position"]["market"]: p["position"] for p in frame["data"]["positions"]}


class Client(ProtocolClient):
    """In-process, through channels' WebsocketCommunicator."""

    def __init__(self, account=None, headers=None):
        super().__init__(account)
        self.comm = WebsocketCommunicator(application, "/", headers=headers or [])

    async def _open(self):
        connected, _ = await self.comm.connect()
        assert connected

    async def _close(self):
        if self.comm.future.done() and self.comm.future.cancelled():
            return  # a timed-out receive already cancelled the application
        await self.comm.disconnect()

    async def _receive(self, timeout):
        output = await self.comm.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return output["text"]

    async def _send(self, text=None, binary=None):
        await self.comm.send_to(text_data=text, bytes_data=binary)

    async def expect_nothing(self, timeout=0.3):
        # receive_output would cancel the application on its time-out; receive_nothing only peeks
        assert await self.comm.receive_nothing(timeout=timeout), "unexpected frame"


class NetworkClient(ProtocolClient):
    """Over a real socket to a running server, with the ``websockets`` client library."""

    def __init__(self, url, account=None, **connect_kwargs):
        super().__init__(account)
        self.url, self.connect_kwargs = url, connect_kwargs

    async def _open(self):
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, **self.connect_kwargs)

    async def _close(self):
        await self.ws.close()

    async def _receive(self, timeout):
        async with asyncio.timeout(timeout):
            return await self.ws.recv()

    async def _send(self, text=None, binary=None):
        await self.ws.send(text if text is not None else binary)
