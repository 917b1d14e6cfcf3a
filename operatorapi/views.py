"""HTTP endpoints beside the WebSocket: health and the JWT verification key."""
import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse

from operatorapi.keys import operator_keys

logger = logging.getLogger(__name__)
CHANNEL_LAYER_TIMEOUT = 2.0


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        logger.warning("healthz: database unreachable", exc_info=True)
        return False


async def _channel_layer_ok() -> bool:
    """A round trip through the layer: send to a fresh channel and read it back.

    The channel takes the layer's default prefix: channels-redis reads every process-local channel from one list
    per prefix, and the reader is whichever receiver holds its lock (usually a consumer), so another prefix would
    never be read while a WebSocket is connected.
    """
    try:
        layer = get_channel_layer()
        name = await layer.new_channel()
        async with asyncio.timeout(CHANNEL_LAYER_TIMEOUT):
            await layer.send(name, {"type": "healthz.ping"})
            return (await layer.receive(name))["type"] == "healthz.ping"
    except Exception:
        logger.warning("healthz: channel layer unreachable", exc_info=True)
        return False


async def healthz(request):
    checks = {"database": await sync_to_async(_database_ok)(), "channel_layer": await _channel_layer_ok()}
    ok = all(checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503)


def jwks(request):
    return JsonResponse(operator_keys().jwks())
