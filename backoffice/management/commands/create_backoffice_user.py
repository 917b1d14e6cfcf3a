import os

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backoffice.audit import record
from backoffice.management.commands import _common
from backoffice.otp import provision_device
from backoffice.permissions import ensure_backoffice_group


class Command(BaseCommand):
    help = ("Create a back-office clerk: a staff user in the 'back-office' group (view everything, act on "
            "settlements, set marks). The password comes from the environment variable named by --password-env and "
            "must pass the password validators; without it the account has no usable password until "
            "`manage.py changepassword USERNAME`. Prints the otpauth:// URI of the user's authenticator device "
            "(the second factor, BACKOFFICE_2FA): shown once, keep it secret. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
        parser.add_argument("--superuser", action="store_true", help="full rights instead of the clerk's")

    def handle(self, *args, username, email, password_env, superuser, **options):
        User = get_user_model()
        password = None
        if password_env:
            password = os.environ.get(password_env)
            if not password:
                raise CommandError(f"environment variable {password_env} is not set or empty")
        if User.objects.filter(username=username).exists():
            raise CommandError(f"user {username!r} already exists")
        with transaction.atomic():
            user = User(username=username, email=email, is_staff=True, is_superuser=superuser)
            user.set_password(password) if password else user.set_unusable_password()
            try:
                user.full_clean(exclude=["password"])
            except ValidationError as exc:
                raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()))
            if password:
                try:  # settings.AUTH_PASSWORD_VALIDATORS, as changepassword and the admin's forms run them
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError(f"password refused: {' '.join(exc.messages)}")
            user.save()
            device = provision_device(user)
            user.groups.add(ensure_backoffice_group())
            record(actor=_common.ACTOR(), action="create_backoffice_user", obj=user, before=None,
                   after={"username": username, "superuser": superuser, "group": "back-office",
                          "authenticator": "totp"})
        self.stdout.write(f"created {'superuser' if superuser else 'back-office clerk'} {username}")
        self.stdout.write("authenticator (add it to the user's TOTP app; shown once, keep it secret):")
        self.stdout.write(device.config_url)
        if not password:
            self.stdout.write(f"no password set: run `manage.py changepassword {username}`")
