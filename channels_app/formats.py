"""What the domain's identifiers and texts look like: one definition each, used by the wire schemas, the admin and
the commands alike."""
import re

from django.core.exceptions import ValidationError

MARKET_RE = re.compile(r"[A-Z0-9]{1,16}/[A-Z0-9]{1,16}")
CHANNEL_ID_RE = re.compile(r"0x[0-9a-f]{64}")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
# C0 and C1 control characters (NUL included, which PostgreSQL cannot store in text) and DEL: no text field of
# the protocol has a use for them, and the two databases would treat them differently.
CONTROL_CHARACTER_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_character(text: str) -> str | None:
    """The first control character in ``text``, written like ``U+0000``, or None."""
    found = CONTROL_CHARACTER_RE.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def no_control_characters(value: str) -> None:
    """Model field validator (admin forms): the same rule as the wire's."""
    found = control_character(value)
    if found:
        raise ValidationError(f"contains the control character {found}")
