from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from channels_app import identity as keys


class Command(BaseCommand):
    help = ("Show the operator's identity (Ethereum address) and its JWT signing key (kid, public key). "
            "In development (OPERATOR_DEV_KEYS=true), --create generates whichever key is missing into VAR_DIR "
            "(mode 0600); outside development the keys come from the environment only. Private keys are never "
            "printed.")

    def add_arguments(self, parser):
        parser.add_argument("--create", action="store_true",
                            help="generate missing keys into VAR_DIR (development only: OPERATOR_DEV_KEYS=true)")

    def handle(self, *args, create, **options):
        var_dir = settings.VAR_DIR
        sources = {
            "operator key": ("OPERATOR_PRIVATE_KEY", settings.OPERATOR_PRIVATE_KEY, var_dir / keys.OPERATOR_KEY_FILE),
            "JWT key": ("JWT_PRIVATE_KEY", settings.JWT_PRIVATE_KEY, var_dir / keys.JWT_KEY_FILE),
        }
        if not settings.GENERATE_MISSING_KEYS:
            unset = [variable for variable, value, _ in sources.values() if not value]
            if unset:
                raise CommandError(f"{' and '.join(unset)} not set: outside development the keys come from the "
                                   "environment only (OPERATOR_DEV_KEYS=true generates them into VAR_DIR, for "
                                   "development only)")
        missing = [name for name, (_, value, path) in sources.items() if not value and not path.exists()]
        if missing and not create:
            raise CommandError(f"no {' and no '.join(missing)} yet (neither in the environment nor in {var_dir}); "
                               "run with --create to generate them")
        for name in missing:
            self.stderr.write(f"creating the {name} in {sources[name][2]}")
        keys.operator_keys.cache_clear()
        loaded = keys.operator_keys()
        for name, (variable, value, path) in sources.items():
            self.stdout.write(f"{name}: from {'the environment (' + variable + ')' if value else path}")
        self.stdout.write(f"operator address: {loaded.address}")
        self.stdout.write(f"JWT kid: {loaded.kid} (ES256, served at /.well-known/jwks.json)")
        self.stdout.write(loaded.jwt_public_key.public_bytes(
            keys.serialization.Encoding.PEM, keys.serialization.PublicFormat.SubjectPublicKeyInfo).decode().strip())
