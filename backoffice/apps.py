from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig
from django.db.models.signals import post_migrate


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"

    def ready(self):
        from backoffice.permissions import ensure_backoffice_group

        # After every migrate, once permissions exist: the clerks' group has exactly what it should.
        post_migrate.connect(ensure_backoffice_group, sender=self)


class OperatorAdminConfig(AdminConfig):
    default_site = "backoffice.site.OperatorAdminSite"
