"""Recording manual actions (call inside the action's transaction, so the entry and the change commit together)."""
import getpass

from backoffice.models import AuditEntry


def admin_actor(user) -> str:
    return f"admin:{user.get_username()}"


def command_actor() -> str:
    try:
        return f"command:{getpass.getuser()}"
    except Exception:
        return "command:unknown"


def record(*, actor: str, action: str, obj=None, before=None, after=None, user=None) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor[:150],
        user=user if user is not None and user.is_authenticated else None,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        before=before,
        after=after,
    )
