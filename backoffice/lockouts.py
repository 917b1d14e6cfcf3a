"""Failed back-office sign-ins are throttled by django-axes (settings: AXES_*, from BACKOFFICE_LOGIN_FAILURES and
BACKOFFICE_LOCKOUT_SECONDS). Each lock-out is audited here, once, when it starts: the failures that follow while
it lasts extend it (axes) but are not new entries, so guessing cannot flood the audit log."""
from django.conf import settings
from django.contrib.auth import get_user_model

from backoffice.audit import record

LOCKOUT_ACTION = "backoffice_lockout"
LIFT_ACTION = "lift_backoffice_lockout"


def record_lockout(sender, request=None, username=None, ip_address=None, **kwargs):
    """Receiver of axes' ``user_locked_out``: sent at the failure that reaches the limit and at each later one."""
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is not None and failures > settings.AXES_FAILURE_LIMIT:
        return  # this lock-out is already in the log
    user = get_user_model().objects.filter(username=username).first() if username else None
    record(actor=f"login:{ip_address or 'unknown'}", action=LOCKOUT_ACTION, obj=user,
           after={"username": username, "ip_address": ip_address, "failures": failures,
                  "cooloff_seconds": int(settings.AXES_COOLOFF_TIME.total_seconds())})
