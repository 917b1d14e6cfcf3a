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
"""
import asyncio
import logging

from channels_redis import pubsub

from operatorapi.compat import require

require("channels-redis", "4.3")
logger = logging.getLogger(__name__)
RETRY_SECONDS = 0.5


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


class OutageTolerantPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """``channels_redis.pubsub.RedisPubSubChannelLayer`` whose connections survive a Redis outage, and which sends
    many messages in one round trip (``send_many``)."""

    async def send_many(self, messages) -> None:
        """Each (to a group?, group or channel name, message) published in order, in one pipeline a shard: one
        round trip for all of them, where ``group_send``/``send`` take one each, and take them one at a time (a
        shard's lock, which this takes once)."""
        layer = self._get_layer()
        by_shard: dict = {}
        for to_group, name, message in messages:
            channel = layer._get_group_channel_name(name) if to_group else name
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, self.serialize(message)))
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
