"""Deploy check of the back office's sign-in (``manage.py check --deploy``):

- ``backoffice.W001``: BACKOFFICE_2FA is off with DEBUG off, so a password alone opens the back office.
"""
from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def check_two_factor(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if getattr(settings, "BACKOFFICE_2FA", True) or settings.DEBUG:
        return []
    return [checks.Warning(
        "BACKOFFICE_2FA is off: a password alone opens the back office, which accepts and fails settlements.",
        hint="Unset BACKOFFICE_2FA (it is on by default); 'off' is for development and tests only.",
        id="backoffice.W001")]
