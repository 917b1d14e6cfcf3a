"""Sign-in records of django-axes in the back office, for superusers only (the clerks' group has none of their
permissions): the attempts that lock a username and address out, the failures, the sign-ins. Deleting an attempt
lifts its lock-out; that is audited like every manual action.

Imported by ``BackofficeConfig.ready`` (after the admin's autodiscovery, with ``AXES_ENABLE_ADMIN`` off so axes
registers nothing itself)."""
from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.db import transaction

from backoffice.audit import admin_actor, record
from backoffice.lockouts import LIFT_ACTION


def _attempt(attempt: AccessAttempt) -> dict:
    return {"username": attempt.username, "ip_address": attempt.ip_address,
            "failures": attempt.failures_since_start}


@admin.register(AccessAttempt)
class LockoutAdmin(AccessAttemptAdmin):
    """Axes' own list (status "Locked Out" past the limit); delete lifts, audited in the same transaction."""

    def delete_model(self, request, obj):
        with transaction.atomic():
            record(actor=admin_actor(request.user), user=request.user, action=LIFT_ACTION, obj=obj,
                   before=_attempt(obj), after=None)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for attempt in queryset:
                record(actor=admin_actor(request.user), user=request.user, action=LIFT_ACTION, obj=attempt,
                       before=_attempt(attempt), after=None)
            super().delete_queryset(request, queryset)


@admin.register(AccessFailureLog)
class FailedSigninAdmin(AccessFailureLogAdmin):
    def has_change_permission(self, request, obj=None):
        return False  # a record of what happened


@admin.register(AccessLog)
class SigninAdmin(AccessLogAdmin):
    def has_change_permission(self, request, obj=None):
        return False
