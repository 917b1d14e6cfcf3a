"""HTTP endpoints beside the WebSocket: health and the JWT verification key."""
import asyncio
import logging
import uuid
import weakref

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse

from operatorapi import shutdown
from operatorapi.dbthreads import giving_connections_back
from channels_app.identity import operator_keys

logger = logging.getLogger(__name__)
CHANNEL_LAYER_TIMEOUT = 2.0


@giving_connections_back  # a probe that kept its connection would keep a dead one after a database restart
def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:
        logger.warning("healthz: database unreachable (%s)", type(exc).__name__)
        return False


# layer -> (event loop, this process's probe channel on it), made once, reused
_probe_channels = weakref.WeakKeyDictionary()


async def _channel_layer_ok() -> bool:
    """A round trip through the layer: send to this process's probe channel and read it back.

    One channel per process, reused: with the pub/sub layer every new channel is a Redis subscription that stays
    for the life of the process. A nonce tells this probe's message from a late one of a probe that timed out.
    The channel belongs to the event loop it was made on (the pub/sub layer subscribes per loop; a server has one
    loop, a test run one per test).
    """
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    try:
        if _probe_channels.get(layer, (None, None))[0] is not loop:
            _probe_channels[layer] = (loop, await layer.new_channel())
        name, nonce = _probe_channels[layer][1], uuid.uuid4().hex
        async with asyncio.timeout(CHANNEL_LAYER_TIMEOUT):
            await layer.send(name, {"type": "healthz.ping", "nonce": nonce})
            while (await layer.receive(name)).get("nonce") != nonce:
                pass
        return True
    except Exception as exc:
        # A cancelled receive ends the channel's subscription (pub/sub layer): the next probe makes a new one.
        _probe_channels.pop(layer, None)
        logger.warning("healthz: channel layer unreachable (%s)", type(exc).__name__)
        return False


async def healthz(request):
    checks = {"database": await sync_to_async(_database_ok)(), "channel_layer": await _channel_layer_ok()}
    ok = all(checks.values())
    status = "ok" if ok else "unavailable"
    if shutdown.draining():  # stopping (SIGTERM): a load balancer sends new connections elsewhere
        ok, status = False, "draining"
    return JsonResponse({"status": status, **checks}, status=200 if ok else 503)


def jwks(request):
    return JsonResponse(operator_keys().jwks())
