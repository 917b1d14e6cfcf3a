"""Recording manual actions (call inside the action's transaction, so the entry and the change commit together).

An action a signed-in user took is also written to Django's admin log (``LogEntry``), from here, so that the
admin's "Recent actions" and each object's "History" tell what the project's audit log tells: a clerk looking at
either place sees the same action, with the note typed for it.
"""
import getpass

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry

from backoffice.models import AuditEntry


def admin_actor(user) -> str:
    return f"admin:{user.get_username()}"


def command_actor() -> str:
    try:
        return f"command:{getpass.getuser()}"
    except Exception:
        return "command:unknown"


def record(*, actor: str, action: str, obj=None, before=None, after=None, user=None) -> AuditEntry:
    user = user if user is not None and user.is_authenticated else None
    entry = AuditEntry.objects.create(
        actor=actor[:150],
        user=user,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        before=before,
        after=after,
    )
    if user is not None and obj is not None:  # Django's log needs both (a command has no user: the audit log only)
        LogEntry.objects.log_actions(user_id=user.pk, queryset=[obj],
                                     action_flag=ADDITION if before is None else CHANGE,
                                     change_message=change_message(action, before, after))
    return entry


def change_message(action: str, before, after) -> str:
    """One line for Django's History: the action, what it changed (scalar fields only: a ledger stays in the audit
    entry) and the note. Plain text, never JSON: the admin shows it as written."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    changes = []
    for key, value in after.items():
        if key == "note" or not _plain(value):
            continue
        was = before.get(key)
        changes.append(f"{key} {_text(was)} → {_text(value)}" if key in before and was != value and _plain(was)
                       else f"{key} {_text(value)}")
    message = action.replace("_", " ") + (": " + ", ".join(changes) if changes else "")
    note = after.get("note")
    return message + (f"; note: {note}" if note else "")


def _plain(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool)) or (
        isinstance(value, list) and all(isinstance(v, (str, int)) for v in value))


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
