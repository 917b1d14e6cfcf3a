from django.conf import settings
from django.urls import path

from operatorapi.consumers import OperatorConsumer

websocket_urlpatterns = [path("", OperatorConsumer.as_asgi())]

if settings.BENCH_ECHO:  # the benchmark's baseline (bench/), never on in production
    from bench.echo import CeilingConsumer, DirectEchoConsumer, EchoConsumer

    websocket_urlpatterns += [path("bench/echo", EchoConsumer.as_asgi()),
                              path("bench/echo-direct", DirectEchoConsumer.as_asgi()),
                              path("bench/ceiling/<int:pair>/<int:side>", CeilingConsumer.as_asgi())]
