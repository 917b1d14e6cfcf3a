"""Settings for Operator API.

One code path, two setups: with nothing in the environment it runs on SQLite in ``var/`` and the in-memory
channel layer; with ``DATABASE_URL`` and ``REDIS_URL`` it runs on PostgreSQL (psycopg 3, pooled) and
channels-redis. Every knob is an environment variable (docs/protocol.md section 9).
"""
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# Development only (scripts/run on the embedded default, the tests): SECRET_KEY, OPERATOR_PRIVATE_KEY and
# JWT_PRIVATE_KEY, when unset, are generated once into VAR_DIR (0600) and reused. Off (the default), nothing is
# generated: a missing key is the system check error operatorapi.E001 and the server refuses to start.
GENERATE_MISSING_KEYS = env.bool("OPERATOR_DEV_KEYS", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and GENERATE_MISSING_KEYS:
    from channels_app.identity import load_or_create_secret_key

    SECRET_KEY = load_or_create_secret_key(VAR_DIR)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

# Production behind TLS (wss:// and https://, README "Production"): secure cookies, HSTS, http -> https (but
# /healthz, which load balancers probe over plain http). `manage.py check --deploy` is clean with TLS=true.
TLS = env.bool("TLS", default=False)
if TLS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
if env.bool("TLS_PROXY", default=False):  # a proxy terminates TLS and says so in X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "backoffice.apps.OperatorAdminConfig",  # django.contrib.admin with the back-office site and dashboard
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "channels_app",
    "settlement",
    "backoffice.apps.BackofficeConfig",
    "django_otp",  # the back office's second factor (backoffice/site.py, backoffice/otp.py)
    "django_otp.plugins.otp_totp",
    "axes",  # throttles failed back-office sign-ins (backoffice/lockouts.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the admin's static files, with DEBUG off too
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the session passed the second factor
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lock-out into its page (429)
]

ROOT_URLCONF = "operatorapi.urls"
ASGI_APPLICATION = "operatorapi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'operator.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue instead of failing
    # with "database is locked" half-way through; WAL lets readers run beside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = None  # one file, one writer thread: keep the connection
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Tests run on a file too: the in-memory default uses shared-cache table locks that ignore the timeout.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Long-lived async workers: a pool (not per-thread persistent connections) with health checks.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # with a pool: checked when taken from the pool
    # psycopg prepares nothing (Django's default threshold, None): the hot paths prepare their statements with SQL's
    # PREPARE (channels_app/pipeline.py), which psycopg would deallocate with its own after any ROLLBACK.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN", default=2),
        "max_size": env.int("DB_POOL_MAX", default=10),
        "timeout": 10,
    }
    # Several test runs side by side (one per worktree or agent) each need their own test database.
    if env.str("TEST_DATABASE_NAME", default=""):
        DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
# Database threads of a server process (operatorapi/dbthreads.py): one per shard of channels. SQLite has one
# writer, so one thread; on PostgreSQL each thread holds a pooled connection while it works (keep <= DB_POOL_MAX).
DB_THREADS = env.int("DB_THREADS", default=1 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 8)
# The trade path on the event loop with psycopg's async connections (channels_app/aiodb.py), PostgreSQL only; off:
# on the channel's database thread like every other request (the same statements; for comparison).
TRADES_ON_EVENT_LOOP = env.bool("TRADES_ON_EVENT_LOOP", default=True)
# The server's garbage collector (operatorapi/collector.py): the youngest generation collected every so many
# allocations, the start-up heap frozen; 0 leaves Python's defaults.
GC_GEN0_THRESHOLD = env.int("GC_GEN0_THRESHOLD", default=50_000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ------------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    # Redis pub/sub: a group_send is one PUBLISH and delivery is pushed, where the list-based layer took about a
    # dozen round trips per notification (bench/RESULTS.md). Group memberships live in each process, so a Redis
    # restart loses none; operatorapi.compat.redis_pubsub renews the subscriptions when Redis returns. At most once delivery.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "operatorapi.compat.redis_pubsub.OutageTolerantPubSubChannelLayer",
            # socket_timeout None: redis-py's own timeout must not kill the layer's blocking reads.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1500}}}

# The domain's outbox hands committed notices to the transport through this callable (channels_app/outbox.py).
NOTICE_PUBLISHER = "operatorapi.publisher.publish"

# --- Cache: shared by every process where Redis is (the authentication lock-out counts per client IP) ----------
# "local" is the process's own, the fallback while Redis is unreachable.
CACHES = {"local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "local"}}
if REDIS_URL:
    CACHES["default"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                         "KEY_PREFIX": "operatorapi"}
else:
    CACHES["default"] = CACHES["local"]

# --- Auth / i18n / static -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Axes first: it refuses a locked-out username and address before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Back-office sign-in (docs/protocol.md section 10, "Back office and operators") --------------------------
# Two factors: a back-office session sees nothing until a confirmed TOTP device verified it (backoffice/site.py).
# "off" is for development and the tests only; `check --deploy` warns about it with DEBUG off (backoffice.W001).
BACKOFFICE_2FA = env.bool("BACKOFFICE_2FA", default=True)
OTP_TOTP_ISSUER = "Operator API back office"  # the account's label in the clerk's authenticator app
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # the admin never shows a device's secret key once it exists
# Failed sign-ins (django-axes): after BACKOFFICE_LOGIN_FAILURES for one username from one client address, that
# pair is locked out for BACKOFFICE_LOCKOUT_SECONDS (audited; a superuser lifts it in the admin). The address is
# REMOTE_ADDR: behind a proxy, the proxy's.
BACKOFFICE_LOGIN_FAILURES = env.int("BACKOFFICE_LOGIN_FAILURES", default=5)
BACKOFFICE_LOCKOUT_SECONDS = env.int("BACKOFFICE_LOCKOUT_SECONDS", default=3600)
AXES_FAILURE_LIMIT = BACKOFFICE_LOGIN_FAILURES
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # the username AND the address, not either alone
AXES_COOLOFF_TIME = timedelta(seconds=BACKOFFICE_LOCKOUT_SECONDS)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failed sign-in kept (up to 1000 per username), for the superuser
AXES_ENABLE_ADMIN = False  # backoffice/admin/signin.py registers axes' models, lifting a lock-out audited
# Idle sessions end: each request pushes the expiry BACKOFFICE_SESSION_IDLE_SECONDS ahead (a sliding expiry).
BACKOFFICE_SESSION_IDLE_SECONDS = env.int("BACKOFFICE_SESSION_IDLE_SECONDS", default=1800)
SESSION_COOKIE_AGE = BACKOFFICE_SESSION_IDLE_SECONDS
SESSION_SAVE_EVERY_REQUEST = True

# --- Operator protocol (docs/protocol.md section 9) ---------------------------------------------------------
API_VERSION = "1.0.0"
OPERATOR_PRIVATE_KEY = env.str("OPERATOR_PRIVATE_KEY", default="")
JWT_PRIVATE_KEY = env.str("JWT_PRIVATE_KEY", default="", multiline=True)
JWT_AUDIENCE = env.str("JWT_AUDIENCE", default="finex")
JWT_TTL_SECONDS = env.int("JWT_TTL_SECONDS", default=3600)
CHALLENGE_TTL_SECONDS = env.int("CHALLENGE_TTL_SECONDS", default=300)
MAX_AUTH_FAILURES = env.int("MAX_AUTH_FAILURES", default=5)
OPERATOR_ALLOWED_PEERS = env.list("OPERATOR_ALLOWED_PEERS", default=[])
MAX_FRAME_BYTES = env.int("MAX_FRAME_BYTES", default=65536)
# record_trades alone (authenticated peers only) may be larger. 4 MiB holds a full batch of 6765 trades with
# realistic fields (external ids "fill-2026-11-27-binance-ETHUSDT-<uuid4>", amounts "12.345678901234567891", prices
# with 18 decimals: 1,471,542 bytes of compact JSON) 2.8 times over, and the worst case of the schema's limits in
# compact ASCII JSON (128-character external ids, 16/16-letter markets, 40-digit decimals, no extra properties:
# 2,307,020 bytes) 1.8 times. Longer writings of the same batch (escaped or non-ASCII external ids at full length:
# up to 11.8 MB; zero-padded decimals, whitespace, extra properties) may not fit: such a batch must be split.
MAX_BATCH_FRAME_BYTES = env.int("MAX_BATCH_FRAME_BYTES", default=4194304)
# Daphne's own cap on a WebSocket message (and frame; autobahn applies it to replies too), read by
# operatorapi/serve.py (scripts/run) and by `manage.py runserver`: deliberately above both limits, so a frame between
# them gets message_too_large and the connection stays; past it Daphne drops the connection unanswered
# (docs/protocol.md section 1).
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = env.int("DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE",
                                            default=2 * max(MAX_FRAME_BYTES, MAX_BATCH_FRAME_BYTES))
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE
# Requests per second per connection (token bucket); past RATE_LIMIT_CLOSE_AFTER refusals in a row: close 4429.
RATE_LIMIT_PER_SECOND = env.float("RATE_LIMIT_PER_SECOND", default=500.0)
RATE_LIMIT_BURST = env.int("RATE_LIMIT_BURST", default=1000)
RATE_LIMIT_CLOSE_AFTER = env.int("RATE_LIMIT_CLOSE_AFTER", default=100)
# Abuse limits (docs/protocol.md section 10): live authenticated connections per peer (0 = no limit); seconds a
# connection may stay unauthenticated; failed authentications per client IP within the lock-out window.
MAX_CONNECTIONS_PER_PEER = env.int("MAX_CONNECTIONS_PER_PEER", default=32)
# Presence is a lease (channels_app/services/presence.py): a connection counts for PRESENCE_LEASE_SECONDS after its
# process last renewed it; each process renews its connections every PRESENCE_HEARTBEAT_SECONDS (keep it well under).
PRESENCE_LEASE_SECONDS = env.float("PRESENCE_LEASE_SECONDS", default=30.0)
PRESENCE_HEARTBEAT_SECONDS = env.float("PRESENCE_HEARTBEAT_SECONDS", default=10.0)
AUTH_TIMEOUT_SECONDS = env.float("AUTH_TIMEOUT_SECONDS", default=30.0)
AUTH_LOCKOUT_FAILURES = env.int("AUTH_LOCKOUT_FAILURES", default=20)
AUTH_LOCKOUT_SECONDS = env.int("AUTH_LOCKOUT_SECONDS", default=300)
# Graceful shutdown (operatorapi/shutdown.py): seconds a stopping process waits for its connections to close.
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=10.0)
CHANNEL_APP_DEFINITION = env.str("CHANNEL_APP_DEFINITION", default="0x" + "0" * 40)
CHANNEL_CHALLENGE_DURATION = env.int("CHANNEL_CHALLENGE_DURATION", default=86400)
# Channels (docs/protocol.md section 4): "consent" opens a channel only when the responder sends open_channel back
# with the same deposit (a proposal not accepted within CHANNEL_ACCEPT_SECONDS expires to closed); "auto" opens at
# once, the behaviour before consent existed, for testing only.
CHANNEL_ACCEPT_POLICY = env.str("CHANNEL_ACCEPT_POLICY", default="consent")
CHANNEL_ACCEPT_SECONDS = env.float("CHANNEL_ACCEPT_SECONDS", default=86400.0)
# Margin zones (channels_app/risk.py): a party's balance as a share of the deposit against the maintenance margin
# rate: green >= 2 x rate, orange >= rate, red below. Entering red starts a forced settlement of the open markets
# with MARGIN_FORCED_SETTLEMENT_METHOD. A decimal string (0 < rate < 0.5), read exactly: never a float.
MARGIN_MAINTENANCE_RATE = env.str("MARGIN_MAINTENANCE_RATE", default="0.10")
# Settlement: the counterparty's acceptance policy ("auto" accepts at once, "manual" waits for back office).
SETTLEMENT_ACCEPT_POLICY = env.str("SETTLEMENT_ACCEPT_POLICY", default="auto")
# Payment methods and their backends (settlement/payments/).
PAYMENT_BACKENDS = {"mock": "settlement.payments.mock.MockBackend", "escrow": "settlement.payments.escrow.EscrowBackend"}
# The payment worker (settlement/worker.py): how often it looks for due settlements, and how long its lease lasts
# (a standby takes over that long after the holder died). Every server process runs one as a standby (the embedded
# default settles by itself); `manage.py settlement_worker` runs one on its own.
SETTLEMENT_WORKER_POLL_SECONDS = env.float("SETTLEMENT_WORKER_POLL_SECONDS", default=0.25)
SETTLEMENT_WORKER_LEASE_SECONDS = env.float("SETTLEMENT_WORKER_LEASE_SECONDS", default=30.0)  # > 3 RPC time-outs
SETTLEMENT_WORKER_IN_PROCESS = env.bool("SETTLEMENT_WORKER_IN_PROCESS", default=True)
# Escrow on an EVM chain (docs/escrow.md section 6): unset ESCROW_RPC_URL = escrow unavailable.
ESCROW_RPC_URL = env.str("ESCROW_RPC_URL", default="")
ESCROW_CONTRACT = env.str("ESCROW_CONTRACT", default="")
ESCROW_TOKENS = env.str("ESCROW_TOKENS", default="")  # USD=0x…,USDT=0x…
ESCROW_CONFIRMATIONS = env.int("ESCROW_CONFIRMATIONS", default=2)
ESCROW_FUNDING_SECONDS = env.int("ESCROW_FUNDING_SECONDS", default=3600)
ESCROW_RPC_TIMEOUT_SECONDS = env.float("ESCROW_RPC_TIMEOUT_SECONDS", default=10.0)
ESCROW_EXPLORER_URL = env.str("ESCROW_EXPLORER_URL", default="")  # e.g. https://etherscan.io (links in back office)
# The forced settlement of a channel that entered red (settlement/margin_calls.py): escrow where a chain is configured.
MARGIN_FORCED_SETTLEMENT_METHOD = env.str("MARGIN_FORCED_SETTLEMENT_METHOD",
                                          default="escrow" if ESCROW_RPC_URL else "mock")
# Test hook only (settlement/failpoints.py): named places where the payment worker exits at once. Empty in production.
FAILPOINTS = env.list("FAILPOINTS", default=[])
# bench/: serve the bare echo consumer at /bench/echo as the benchmark's baseline.
BENCH_ECHO = env.bool("BENCH_ECHO", default=False)

# Structured logs: one JSON object per line (LOG_FORMAT=plain for a terminal). Each request is one line of
# logger "operatorapi.requests" with the peer, its client address, event, reqid, outcome and duration. The JSON is
# written by orjson (python-json-logger's own formatter for it): 20 us a line instead of 29 (bench/RESULTS.md).
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# django-axes logs every sign-in at INFO; its lock-outs (WARNING) belong in the logs, the rest is in its tables.
LOGGING["loggers"] = {"axes": {"level": "WARNING"}}
