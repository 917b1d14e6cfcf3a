from django.contrib import admin

from backoffice.dashboard import dashboard
from backoffice.otp import BackofficeLoginForm, two_factor_required


class OperatorAdminSite(admin.AdminSite):
    site_header = "Operator API back office"
    site_title = "Operator API back office"
    index_title = "Clearing day"
    index_template = "admin/operator_index.html"
    site_url = None  # no public site: "View site" led to a bare 404

    @property
    def login_form(self):
        """With two factors on, the sign-in asks for the authenticator's code too (backoffice/otp.py)."""
        return BackofficeLoginForm if two_factor_required() else None

    def has_permission(self, request):
        """Every admin view asks this: with two factors on, a session no OTP device verified is shown the sign-in
        page and nothing else, whatever the user's rights (as django_otp.admin.OTPAdminSite does)."""
        if not super().has_permission(request):
            return False
        return not two_factor_required() or request.user.is_verified()

    def index(self, request, extra_context=None):
        """The dashboard with only the panels this user may see (and only those computed)."""
        return super().index(request, {**(extra_context or {}), "dashboard": dashboard(request.user)})
