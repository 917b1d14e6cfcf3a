from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"

    def ready(self):
        from axes.signals import user_locked_out

        from backoffice import checks  # noqa: F401  (registers the deploy check backoffice.W001)
        from backoffice.admin import signin  # noqa: F401  (axes' records, once the admin has autodiscovered)
        from backoffice.lockouts import record_lockout
        from backoffice.permissions import ensure_backoffice_group

        # After every migrate, once permissions exist: the clerks' group has exactly what it should.
        post_migrate.connect(ensure_backoffice_group, sender=self)
        user_locked_out.connect(record_lockout, dispatch_uid="backoffice.lockouts.record_lockout")


class OperatorAdminConfig(AdminConfig):
    default_site = "backoffice.site.OperatorAdminSite"
