"""Exact money: decimal strings in, decimal strings out, ``Decimal`` in between, never a float.

Every figure of the protocol goes through here: ``parse_amount`` for inputs (amount, price, margin deposit),
``fmt`` for outputs, ``MONEY`` as the arithmetic context, and ``ExactDecimalField`` to store values exactly on
SQLite (as text; its NUMERIC affinity would keep ~15 significant digits) and PostgreSQL (unconstrained numeric).
"""
import decimal
import re
from decimal import Decimal

from django.db import models

# Products of two inputs have at most 80 significant digits; 200 leaves room for sums. Inexact is trapped so a
# silent rounding anywhere raises instead of losing money; the one division (average cost) rounds explicitly.
MONEY = decimal.Context(
    prec=200,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
DERIVED_PLACES = 36
INPUT_PLACES = 18
INPUT_SIGNIFICANT_DIGITS = 40
_QUANTUM = Decimal(1).scaleb(-DERIVED_PLACES)
DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
ZERO = Decimal(0)
_SHORT = min(INPUT_PLACES + 2, INPUT_SIGNIFICANT_DIGITS)


class DecimalInputError(ValueError):
    """A decimal string the protocol does not accept; the message says why."""


def parse_amount(text: str, *, positive: bool = True) -> Decimal:
    """Parse an input decimal string: no exponent, <= 18 places, <= 40 significant digits, > 0 if ``positive``."""
    if not DECIMAL_RE.fullmatch(text):
        raise DecimalInputError("must be a decimal string like \"12.5\" (digits, optional point; no exponent)")
    # Counted on the text, before any arithmetic: a string of any length is refused as such, never rounded (a
    # Decimal of more than MONEY's precision would raise Inexact). Trailing zeros after the point do not count
    # (docs/protocol.md section 10: "1.50000000000000000000" is 1.5), nor do leading zeros.
    # A text this short cannot break either limit (at most 18 digits after "0.", 20 digits in all): the usual case.
    if len(text) > _SHORT:
        integer, _, fraction = text.lstrip("-").partition(".")
        fraction = fraction.rstrip("0")
        if len(fraction) > INPUT_PLACES:
            raise DecimalInputError(f"has more than {INPUT_PLACES} digits after the point")
        if len((integer + fraction).lstrip("0")) > INPUT_SIGNIFICANT_DIGITS:
            raise DecimalInputError(f"has more than {INPUT_SIGNIFICANT_DIGITS} significant digits")
    value = Decimal(text)
    if positive and value <= 0:
        raise DecimalInputError("must be greater than zero")
    return value


def fmt(value: Decimal) -> str:
    """Write a decimal back as the protocol does: plain digits, no exponent, no trailing zeros, no "-0"."""
    if not value:
        return "0"
    return format(value.normalize(MONEY), "f")


_ROUNDING = MONEY.copy()  # MONEY without the Inexact trap, for ``divide`` only
_ROUNDING.traps[decimal.Inexact] = False


def divide(numerator: Decimal, denominator: Decimal) -> Decimal:
    """The one inexact operation (average cost): rounded half-even to 36 places, documented in docs/protocol.md."""
    return _ROUNDING.divide(numerator, denominator).quantize(_QUANTUM, context=_ROUNDING)


class ExactDecimalField(models.Field):
    """A Decimal stored without loss: ``numeric`` (no precision limit) on PostgreSQL, canonical text on SQLite.

    SQL arithmetic and ordering on it are only meaningful on PostgreSQL; the code sums in Python.
    """

    description = "Exact decimal"

    def db_type(self, connection):
        return "numeric" if connection.vendor == "postgresql" else "text"

    def get_internal_type(self):
        return "ExactDecimalField"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(value)

    def to_python(self, value):
        if value is None or isinstance(value, Decimal):
            return value
        try:
            return Decimal(str(value))
        except decimal.InvalidOperation as exc:
            from django.core.exceptions import ValidationError

            raise ValidationError(f"{value!r} is not a decimal") from exc

    def get_db_prep_value(self, value, connection, prepared=False):
        value = self.to_python(value)
        if value is None:
            return None
        if connection.vendor == "postgresql":
            return value
        return fmt(value)

    def value_to_string(self, obj):
        value = self.value_from_object(obj)
        return "" if value is None else fmt(value)

    def formfield(self, **kwargs):
        from django import forms

        return super().formfield(**{"form_class": forms.DecimalField, **kwargs})
