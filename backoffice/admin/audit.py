from django.contrib import admin

from backoffice.admin.readonly import ReadOnlyAdmin
from backoffice.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included: the log is not to be edited."""

    list_display = ["at", "actor", "action", "object_type", "object_repr", "note"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_repr", "object_id"]
    date_hierarchy = "at"
    readonly_fields = ["at", "actor", "user", "action", "object_type", "object_id", "object_repr", "note", "before",
                       "after"]

    @admin.display(description="note")
    def note(self, entry):
        """The clerk's note, kept in ``after`` (backoffice/actions.py), shown where the list is read."""
        return (entry.after or {}).get("note", "") if isinstance(entry.after, dict) else ""
