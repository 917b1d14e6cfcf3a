from django.urls import path

from channels_app.consumers import OperatorConsumer

websocket_urlpatterns = [path("", OperatorConsumer.as_asgi())]
