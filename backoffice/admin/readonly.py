"""Read-only admin bases: the ledger, derived state and logs are changed by the protocol and the services alone."""
from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only, for everyone, superusers included."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
