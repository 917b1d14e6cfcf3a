"""The back office's second factor (django-otp, TOTP): the sign-in form that asks for the authenticator's code, and
the device a new back-office user gets. The admin site refuses every session no device verified
(backoffice/site.py), so a password alone opens nothing."""
from django import forms
from django.conf import settings
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "authenticator"


def two_factor_required() -> bool:
    """Read at each request, so a test (or a settings override) can turn it on and off."""
    return bool(getattr(settings, "BACKOFFICE_2FA", True))


def provision_device(user) -> TOTPDevice:
    """A confirmed TOTP device for ``user`` (random key): its ``config_url`` goes into the user's authenticator app."""
    return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=True)


class BackofficeLoginForm(OTPAdminAuthenticationForm):
    """Username, password and the authenticator's code on one page. django-otp wants the device chosen from a list
    it shows only after a first try; a user with one confirmed device (what create_backoffice_user makes) needs no
    choice, so that device is taken."""

    otp_token = forms.CharField(required=False, label="Authenticator code", widget=forms.TextInput(
        attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autocapitalize": "none"}))
    otp_error_messages = dict(
        OTPAdminAuthenticationForm.otp_error_messages,
        token_required="Enter the code your authenticator app shows.",
        invalid_token="Wrong or expired authenticator code. Try the code shown now.",
        no_device="This account has no confirmed authenticator: ask an operator to provision one.",
    )

    def clean_otp(self, user):
        if user is not None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True))
            if not devices:
                raise forms.ValidationError(self.otp_error_messages["no_device"], code="no_device")
            if len(devices) == 1:
                self.cleaned_data["otp_device"] = devices[0].persistent_id
        try:
            super().clean_otp(user)
        finally:  # django-otp writes the password back into the page for a second try: the clerk retypes it
            self.fields["password"].widget.render_value = False
