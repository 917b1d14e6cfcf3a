"""Origin checking for the WebSocket: browsers must come from an allowed host; machine clients send no Origin.

Channels' AllowedHostsOriginValidator refuses a missing Origin, which is what trading systems send, so a missing
Origin is allowed here and a present one must match ALLOWED_HOSTS.
"""
from channels.security.websocket import OriginValidator
from django.conf import settings


class MachineOrBrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def origin_validator(application):
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return MachineOrBrowserOriginValidator(application, allowed)
