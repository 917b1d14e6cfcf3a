from django.conf import settings
from django.urls import path

from operatorapi.consumers import OperatorConsumer

websocket_urlpatterns = [path("", OperatorConsumer.as_asgi())]

if settings.BENCH_ECHO:  # the benchmark's baseline (bench/), never on in production
    from bench.echo import EchoConsumer

    websocket_urlpatterns.append(path("bench/echo", EchoConsumer.as_asgi()))
