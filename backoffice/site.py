from django.contrib import admin

from backoffice.dashboard import dashboard


class OperatorAdminSite(admin.AdminSite):
    site_header = "Operator API back office"
    site_title = "Operator API back office"
    index_title = "Clearing day"
    index_template = "admin/operator_index.html"

    def index(self, request, extra_context=None):
        return super().index(request, {**(extra_context or {}), "dashboard": dashboard()})
