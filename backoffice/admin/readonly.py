"""Read-only admin bases: the ledger, derived state and logs are changed by the protocol and the services alone."""
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from backoffice.display import utc_column


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only, for everyone, superusers included."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_list_display(self, request):
        """A stored time a list names by its field is written in UTC with seconds (``backoffice.display.utc``):
        Django's own format drops the seconds, and clerks match times against brokers' logs to the second."""
        return [utc_column(name) if self._is_time(name) else name for name in super().get_list_display(request)]

    def _is_time(self, name) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return isinstance(self.model._meta.get_field(name), models.DateTimeField)
        except FieldDoesNotExist:
            return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
