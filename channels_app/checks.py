"""System checks of the operator's keys, run by every ``manage.py`` command, ``check --deploy`` and the server
at start-up (operatorapi/asgi.py): outside development (``GENERATE_MISSING_KEYS`` off) a host never makes up keys.

- ``operatorapi.E001``: SECRET_KEY, OPERATOR_PRIVATE_KEY or JWT_PRIVATE_KEY is not set (one error each).
- ``operatorapi.E002``: OPERATOR_PRIVATE_KEY is not a secp256k1 private key.
- ``operatorapi.E003``: JWT_PRIVATE_KEY is not a P-256 private key in PEM.
- ``operatorapi.E004``: a risk setting (CHANNEL_ACCEPT_POLICY, CHANNEL_ACCEPT_SECONDS, MARGIN_MAINTENANCE_RATE,
  MARGIN_FORCED_SETTLEMENT_METHOD) has a value the rules cannot work with.

No message ever quotes a key.
"""
from pathlib import Path

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from channels_app import identity, risk

# A key an earlier (development) start generated into VAR_DIR: named in the hint, so its identity can be kept.
GENERATED_FILES = {"SECRET_KEY": identity.SECRET_KEY_FILE, "OPERATOR_PRIVATE_KEY": identity.OPERATOR_KEY_FILE,
                   "JWT_PRIVATE_KEY": identity.JWT_KEY_FILE}


def _value(name: str) -> str:
    try:
        return getattr(settings, name, "") or ""
    except ImproperlyConfigured:  # Django refuses to hand out an empty SECRET_KEY
        return ""


@checks.register()
def check_operator_keys(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []
    generate = getattr(settings, "GENERATE_MISSING_KEYS", False)
    for name in identity.KEY_VARIABLES:
        if generate or _value(name):
            continue
        hint = identity.missing_key_hint(name)
        earlier = Path(settings.VAR_DIR) / GENERATED_FILES[name]
        if earlier.exists():
            hint += f" {earlier} holds the one an earlier development start generated here."
        errors.append(checks.Error(identity.missing_key_message(name), hint=hint, id="operatorapi.E001"))
    if operator_key := _value("OPERATOR_PRIVATE_KEY"):
        try:
            identity.Account.from_key(operator_key)
        except Exception as exc:  # eth-keys raises ValueError, binascii.Error, ValidationError...; never quote it
            errors.append(checks.Error(
                f"OPERATOR_PRIVATE_KEY is not a secp256k1 private key ({type(exc).__name__}).",
                hint=f"Set OPERATOR_PRIVATE_KEY to {identity.KEY_VARIABLES['OPERATOR_PRIVATE_KEY']}.",
                id="operatorapi.E002"))
    if jwt_key := _value("JWT_PRIVATE_KEY"):
        try:
            identity.load_jwt_private_key(jwt_key)
        except ValueError as exc:
            errors.append(checks.Error(
                f"{exc}.", hint=f"Set JWT_PRIVATE_KEY to {identity.KEY_VARIABLES['JWT_PRIVATE_KEY']} (newlines may "
                                "be written as \\n).", id="operatorapi.E003"))
    return errors


@checks.register()
def check_risk_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    errors = []

    def error(message, hint):
        errors.append(checks.Error(message, hint=hint, id="operatorapi.E004"))

    if settings.CHANNEL_ACCEPT_POLICY not in ("consent", "auto"):
        error(f"CHANNEL_ACCEPT_POLICY is {settings.CHANNEL_ACCEPT_POLICY!r}.",
              "Set it to \"consent\" (the default) or \"auto\" (testing only).")
    if not settings.CHANNEL_ACCEPT_SECONDS > 0:
        error("CHANNEL_ACCEPT_SECONDS must be greater than zero.", "The default is 86400 (a day).")
    try:
        risk.parse_rate(settings.MARGIN_MAINTENANCE_RATE)
    except ValueError as exc:
        error(f"MARGIN_MAINTENANCE_RATE: {exc}.", "Set it to a decimal string such as \"0.10\" (the default).")
    if settings.MARGIN_FORCED_SETTLEMENT_METHOD not in settings.PAYMENT_BACKENDS:
        error(f"MARGIN_FORCED_SETTLEMENT_METHOD is {settings.MARGIN_FORCED_SETTLEMENT_METHOD!r}.",
              "Set it to one of " + ", ".join(sorted(settings.PAYMENT_BACKENDS)) + ".")
    return errors
