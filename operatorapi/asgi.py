"""ASGI entry point: HTTP goes to Django (admin, /healthz, JWKS), WebSocket at / to the operator consumer."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "operatorapi.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing anything that touches models

# Daphne runs no system checks: refuse to serve (non-zero exit, each error named) on any at level ERROR, e.g. a
# missing SECRET_KEY / OPERATOR_PRIVATE_KEY / JWT_PRIVATE_KEY outside development (operatorapi.E001).
from django.core import checks  # noqa: E402
from django.core.management.base import SystemCheckError  # noqa: E402

_check_errors = [message for message in checks.run_checks() if message.is_serious() and not message.is_silenced()]
if _check_errors:
    raise SystemCheckError("System check identified errors; the server refuses to start:\n"
                           + "\n".join(str(message) for message in _check_errors))

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from operatorapi import collector  # noqa: E402
from operatorapi.compat import autobahn_debug  # noqa: E402
from operatorapi.routing import websocket_urlpatterns  # noqa: E402
from operatorapi.security import origin_validator  # noqa: E402
from operatorapi.shutdown import ShutdownMiddleware  # noqa: E402
from operatorapi.worker import WorkerMiddleware  # noqa: E402

autobahn_debug.install()  # Daphne's connections: no debug line formatted unless written

application = ShutdownMiddleware(WorkerMiddleware(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validator(URLRouter(websocket_urlpatterns)),
    }
)))
collector.tune()  # last: what the application holds from here on is never scanned again
