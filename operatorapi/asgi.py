"""ASGI entry point: HTTP goes to Django (admin, /healthz, JWKS), WebSocket at / to the operator consumer."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "operatorapi.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from operatorapi.routing import websocket_urlpatterns  # noqa: E402
from operatorapi.security import origin_validator  # noqa: E402
from operatorapi.shutdown import ShutdownMiddleware  # noqa: E402

application = ShutdownMiddleware(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validator(URLRouter(websocket_urlpatterns)),
    }
))
