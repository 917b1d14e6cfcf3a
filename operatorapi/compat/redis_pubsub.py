"""The Redis channel layer, made to ride out a Redis outage and to publish many messages in one round trip (it
overrides private methods of channels-redis 4.3's ``pubsub`` module: ``RedisSingleShardConnection``'s receiver and
subscription bookkeeping, and uses its shards' lock and client).

channels-redis' pub/sub layer keeps group memberships in the process (so a Redis restart, which empties Redis,
loses none) but gives up on a subscription that fails while Redis is down, and its receiver logs a traceback every
second until Redis returns. Here:

- a subscription made during an outage is remembered, and every subscription is renewed as soon as Redis answers
  again, so existing connections hear notifications again without reconnecting (within about a second);
- new connections and ``subscribe_notifications`` keep working during the outage (requests never depend on Redis);
- publishing still raises while Redis is down: the notification outbox logs what was lost and ``/healthz`` says 503;
- the outage is logged once when it starts and once when it ends.

And a consumer's own channel costs Redis nothing. The library subscribes a Redis channel for each consumer when it
starts and unsubscribes it when it ends: two commands and their two confirmations a connection, 9% of the server's
time in an authentication handshake (bench/RESULTS.md). Here each event loop subscribes one Redis channel, its
*inbox*, once; a consumer's channel is ``<inbox>!<its own part>`` (Channels' form of a process-local name), a message
to it is published to the inbox with the consumer's part in front, and the receiver hands it to that consumer's queue
(a consumer that has gone drops it, as Redis did). Groups are as in the library.
"""
import asyncio
import logging
import uuid

from channels_redis import pubsub

from operatorapi.compat import require

require("channels-redis", "4.3")
logger = logging.getLogger(__name__)
RETRY_SECONDS = 0.5
OWN = "!"  # between a consumer's inbox and its own part (Channels' mark of a process-local name), on the wire too


class _OutageTolerantShard(pubsub.RedisSingleShardConnection):
    def __init__(self, host, channel_layer):
        super().__init__(host, channel_layer)
        self._stale = False  # some subscription may be missing in Redis: renew them all
        self._down_since = None

    async def subscribe(self, channel):
        async with self._lock:
            self._ensure_redis()
            self._ensure_receiver()
            self._subscribed_to.add(channel)
            try:
                await self._pubsub.subscribe(channel)
            except Exception as exc:  # the receiver renews it once Redis answers
                self._outage(exc)

    async def unsubscribe(self, channel):
        async with self._lock:
            self._subscribed_to.discard(channel)
            if self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(channel)
                except Exception as exc:  # a restarted Redis has forgotten it anyway
                    self._outage(exc)

    def _outage(self, exc: Exception) -> None:
        self._stale = True
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            logger.warning("channel layer: Redis at %s unreachable (%s); notifications paused, retrying",
                           self.host.get("address", self.host), type(exc).__name__)

    async def _renew_subscriptions(self) -> None:
        async with self._lock:
            if self._subscribed_to:
                await self._pubsub.subscribe(*self._subscribed_to)
            self._stale = False
        if self._down_since is not None:
            outage = asyncio.get_running_loop().time() - self._down_since
            self._down_since = None
            logger.warning("channel layer: Redis is back after %.1f s; %d subscription(s) renewed", outage,
                           len(self._subscribed_to))

    def _receive_message(self, message):
        if message is not None and message["channel"] in (self.channel_layer.inbox_bytes, self.channel_layer.inbox):
            own, _, data = message["data"].partition(OWN.encode())
            queue = self.channel_layer.channels.get(self.channel_layer.inbox + OWN + own.decode())
            if queue is not None:
                queue.put_nowait(data)
            return
        super()._receive_message(message)

    async def _do_receiving(self):
        while True:
            try:
                if self._stale:
                    await self._renew_subscriptions()
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:  # connection lost or refused: wait, then renew everything
                self._outage(exc)
                await asyncio.sleep(RETRY_SECONDS)


class _OutageTolerantLoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shards = [_OutageTolerantShard(shard.host, self) for shard in self._shards]
        self.inbox = f"{self.prefix}specific.{uuid.uuid4().hex}"  # this loop's consumers' one Redis channel
        self.inbox_bytes = self.inbox.encode()
        self._inbox_subscribed: asyncio.Future | None = None

    def published_as(self, channel: str, data: bytes) -> tuple[str, bytes]:
        """The Redis channel and payload that carry ``data`` to ``channel``: a consumer's via its loop's inbox (on
        whichever process or loop it is), any other as the library publishes it."""
        inbox, local, own = channel.partition(OWN)
        return (inbox, own.encode() + OWN.encode() + data) if local else (channel, data)

    async def new_channel(self, prefix="specific."):
        if self._inbox_subscribed is None:  # the first consumer of this loop subscribes the inbox, once
            self._inbox_subscribed = asyncio.ensure_future(self._get_shard(self.inbox).subscribe(self.inbox))
        await asyncio.shield(self._inbox_subscribed)  # (an outage does not fail it: the receiver renews it)
        channel = f"{self.inbox}{OWN}{uuid.uuid4().hex}"
        self.channels[channel] = asyncio.Queue()
        return channel

    async def send(self, channel, message):
        channel, data = self.published_as(channel, self.channel_layer.serialize(message))
        await self._get_shard(channel).publish(channel, data)

    async def receive(self, channel):
        if OWN not in channel:
            return await super().receive(channel)
        queue = self.channels.get(channel)
        if queue is None:  # (made by ``new_channel``; a receive after the consumer has gone waits on its own)
            queue = self.channels[channel] = asyncio.Queue()
        try:
            message = await queue.get()
        except (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit):
            # the consumer is ending (the library assumes as much): its queue goes, Redis has nothing to forget
            self.channels.pop(channel, None)
            raise
        return self.channel_layer.deserialize(message)

    async def flush(self):
        await super().flush()
        self._inbox_subscribed = None


class OutageTolerantPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """``channels_redis.pubsub.RedisPubSubChannelLayer`` whose connections survive a Redis outage, whose consumers'
    channels share their event loop's one subscription (the inbox), and which sends many messages in one round trip
    (``send_many``)."""

    async def send_many(self, messages) -> None:
        """Each (to a group?, group or channel name, message) published in order, in one pipeline a shard: one
        round trip for all of them, where ``group_send``/``send`` take one each, and take them one at a time (a
        shard's lock, which this takes once)."""
        layer = self._get_layer()
        by_shard: dict = {}
        for to_group, name, message in messages:
            if to_group:
                channel, data = layer._get_group_channel_name(name), self.serialize(message)
            else:
                channel, data = layer.published_as(name, self.serialize(message))
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, data))
        for shard, published in by_shard.items():
            async with shard._lock:
                shard._ensure_redis()
                pipeline = shard._redis.pipeline(transaction=False)
                for channel, data in published:
                    pipeline.publish(channel, data)
                await pipeline.execute()

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = self._layers[loop] = _OutageTolerantLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            pubsub._wrap_close(self, loop)
            return layer
