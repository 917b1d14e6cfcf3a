import sys

from django.apps import AppConfig

# CPython's default. py_ecc (imported by eth-account) raises the limit to 100000 on import; with it a JSON frame
# nested ~100000 deep overflows the C stack inside json.loads and kills the whole server process. At the default
# such a frame raises RecursionError, which the consumer answers as invalid_json.
RECURSION_LIMIT = 1000


class ChannelsAppConfig(AppConfig):
    name = "channels_app"
    verbose_name = "Channels and trades"

    def ready(self):
        import eth_account  # noqa: F401  (make sure py_ecc's import-time change has happened before we undo it)

        sys.setrecursionlimit(RECURSION_LIMIT)

        from channels_app import checks  # noqa: F401  (registers the keys' system checks, operatorapi.E001-E003)

        from operatorapi import compat

        compat.check_all()  # every library-internals shim checks its library's release line at start-up
