"""Klingweb settings: one file, everything that varies read from the environment.

With nothing set, the portal runs on the embedded default: SQLite in the project folder and
django-q2's ORM broker. ``DATABASE_URL`` switches to PostgreSQL, ``REDIS_URL`` moves the
django-q2 broker to Redis. Every variable is listed in README.md's configuration table.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from klingweb.env import (
    env_bool,
    env_decimal,
    env_int,
    env_list,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# Production mode (KLINGWEB_PRODUCTION=1): DEBUG off, SECRET_KEY required, HTTPS only (HSTS,
# redirect, Secure cookies); `manage.py check --deploy` is clean (tests/test_security_settings.py).
PRODUCTION = env_bool("KLINGWEB_PRODUCTION", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production (KLINGWEB_PRODUCTION=1).")
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set in production (KLINGWEB_PRODUCTION=1).")
    # Development and tests only; `make run` writes a real one into .env.
    SECRET_KEY = "dev-insecure-klingweb-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_q",
    "axes",  # sign-in throttling (AXES_* below)
    "csp",  # Content-Security-Policy header (CONTENT_SECURITY_POLICY below)
    "klingweb",  # project-level management commands (kling_api, kling_sandbox)
    "klingweb.accounts",
    "tasks_app",
    "elements_app",
    "klingweb.reporting",  # usage reports; reads the ledger of tasks_app, one way
    "klingweb.api",  # team API keys and the REST API under /api/v1/
    "ninja",  # django-ninja: its Swagger UI assets served from STATIC (no CDN)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything reads a body (CSRF reads request.POST): 413 on an oversized one.
    "klingweb.security.UploadLimitMiddleware",
    "klingweb.security.SecurityHeadersMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "klingweb.accounts.middleware.AccessMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "klingweb.urls"
WSGI_APPLICATION = "klingweb.wsgi.application"
ASGI_APPLICATION = "klingweb.asgi.application"

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
                "klingweb.accounts.context_processors.portal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    except Exception as exc:  # dj-database-url raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL: {exc}") from None
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # Persistent connections: django-q2's ORM broker calls close_old_connections()
            # on every async_task(); with 0 each enqueue closed the file (a WAL checkpoint,
            # ~7 ms) and reopened it — most of the cost of applying a finished task.
            "CONN_MAX_AGE": 60,
            # WAL + a busy timeout let the web server and the cluster share the file.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Background cluster (django-q2) -------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
# Caches. "default" is per process (django-q2 keeps cluster statistics there). "throttle"
# holds the e-mail rate-limit counters and must be shared by every web process: Redis with
# REDIS_URL, else a database table (`manage.py createcachetable`, which `make run` runs).
THROTTLE_CACHE = "throttle"
CACHES: dict = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    THROTTLE_CACHE: (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "klingweb-throttle",
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "klingweb_throttle_cache",
        }
    ),
}
# The usage reports' cached figures (klingweb.reporting.figures), keyed by each team's ledger
# version so a new charge is never hidden: Redis with REDIS_URL (shared by every web process),
# else this process's memory.
REPORT_CACHE = "reports"
REPORT_CACHE_SECONDS = 24 * 3600
CACHES[REPORT_CACHE] = (
    {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "klingweb-reports",
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "reports"}
)
Q_CLUSTER: dict = {
    "name": "klingweb",
    # Worker processes of this qcluster (README: Q_WORKERS, default 2).
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": env_int("Q_TIMEOUT", 300, minimum=10),
    # retry must be larger than timeout, or a slow job is handed to a second worker.
    "retry": env_int("Q_TIMEOUT", 300, minimum=10) + 60,
    "max_attempts": 3,
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "poll": 0.5,
    "label": "Background jobs",
}
# Seconds a running job may still take once `kling_worker` is told to stop (SIGTERM/SIGINT);
# then it is stopped and, unacknowledged, runs again after Q_CLUSTER["retry"] s (README).
Q_STOP_GRACE = float(env_decimal("WORKER_STOP_GRACE_SECONDS", "2"))
if Q_STOP_GRACE < 0:
    raise ImproperlyConfigured("WORKER_STOP_GRACE_SECONDS must be 0 or more.")
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username+IP before the password is checked.
AUTHENTICATION_BACKENDS = [
    "klingweb.backends.RequestAxesBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = 5  # failed sign-ins of one username from one IP...
AXES_COOLOFF_TIME = timedelta(minutes=15)  # ...lock that pair out for 15 minutes
# Never a username alone: a lock by name would let anyone lock a person out from anywhere.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Plus a per-IP cool-off: this many failures from one IP over any usernames (password
# spraying) lock that IP for AXES_COOLOFF_TIME (klingweb.backends.PortalAxesHandler).
AXES_IP_FAILURE_LIMIT = env_int("AXES_IP_FAILURE_LIMIT", 20, minimum=2)
AXES_HANDLER = "klingweb.backends.PortalAxesHandler"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# The client's IP (sign-in lockouts, e-mail rate limits): REMOTE_ADDR, unless the portal sits
# behind TRUSTED_PROXY_COUNT reverse proxies that append the client's address to
# X-Forwarded-For; then the entry the nearest proxy appended (django-ipware, as axes
# configures it; klingweb.backends.client_ip). Entries a client sends itself are further left
# and never used. Set it behind a proxy, or every client has the proxy's address.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "klingweb.backends.client_ip"
AXES_IPWARE_PROXY_ORDER = "left-most"
if TRUSTED_PROXY_COUNT:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR",)
    # ipware counts the proxies listed after the client in the header: the nearest proxy
    # appends the client's address and is itself only in REMOTE_ADDR.
    AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT - 1
else:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
    AXES_IPWARE_PROXY_COUNT = None
AXES_IPWARE_PROXY_TRUSTED_IPS = None
LOGIN_URL = "accounts-login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts-login"
ALLOW_SIGNUP = env_bool("ALLOW_SIGNUP", False)
INVITATION_DAYS = 7

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# Backends that deliver nothing: the console one prints every mail (password-reset and
# invitation links included) into the log, the others keep or drop it. Production mode
# refuses them; `check --deploy` reports them too (klingweb.checks, klingweb.E001).
NON_DELIVERING_EMAIL_BACKENDS = frozenset(
    f"django.core.mail.backends.{name}.EmailBackend"
    for name in ("console", "locmem", "filebased", "dummy")
)
if PRODUCTION and EMAIL_BACKEND in NON_DELIVERING_EMAIL_BACKENDS:
    raise ImproperlyConfigured(
        f"EMAIL_BACKEND is {EMAIL_BACKEND}, which delivers no mail (the console backend prints "
        "password-reset links into the log). In production (KLINGWEB_PRODUCTION=1) set "
        "EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the EMAIL_* variables."
    )
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "klingweb@localhost")

# Rate limits of actions that send e-mail (klingweb.throttle): (events, seconds) per key.
THROTTLE_RATES: dict[str, tuple[int, int]] = {
    "password-reset-address": (3, 3600),  # resets asked for one address...
    "password-reset-client": (10, 3600),  # ...and from one client IP, per hour
    "invitation-address": (3, 3600),  # invitations sent to one address...
    "invitation-client": (30, 3600),  # ...and from one client IP, per hour
    # Requests per team API key (klingweb.api): 429 + Retry-After beyond it.
    "api-key": (env_int("API_RATE_LIMIT_PER_MINUTE", 120, minimum=1), 60),
}

# --- I18N / time --------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media ---------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
# Object storage (S3 or S3-compatible) when AWS_STORAGE_BUCKET_NAME is set; else MEDIA_ROOT.
# Every web server and worker must see the same files: past one machine use the bucket.
_S3_BUCKET = env_str("AWS_STORAGE_BUCKET_NAME")
_S3_ENDPOINT = env_url("AWS_S3_ENDPOINT_URL")
_S3_REGION = env_str("AWS_S3_REGION_NAME")
_S3_ACCESS_KEY = env_str("AWS_ACCESS_KEY_ID")
_S3_SECRET_KEY = env_str("AWS_SECRET_ACCESS_KEY")
if not _S3_BUCKET and (_S3_ENDPOINT or _S3_REGION):
    # The two keys alone are ignored: they are the AWS tools' usual variables.
    raise ImproperlyConfigured(
        "AWS_S3_ENDPOINT_URL or AWS_S3_REGION_NAME is set but AWS_STORAGE_BUCKET_NAME is not: "
        "set the bucket to keep media there, or unset them to keep media under MEDIA_ROOT."
    )
if _S3_BUCKET:
    if bool(_S3_ACCESS_KEY) != bool(_S3_SECRET_KEY):
        raise ImproperlyConfigured(
            "Set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither."
        )
    if _S3_ENDPOINT and not _S3_ACCESS_KEY:
        raise ImproperlyConfigured(
            "AWS_S3_ENDPOINT_URL (an S3-compatible server) needs AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY."
        )
    if not _S3_ENDPOINT and not _S3_REGION:
        raise ImproperlyConfigured(
            "AWS_S3_REGION_NAME must be set for an Amazon S3 bucket (e.g. eu-central-1): "
            "signed URLs name the bucket's region."
        )
    _DEFAULT_STORAGE: dict = {
        # django-storages' S3Storage, uploading files already on disk part by part from the
        # disk (klingweb.storage.KlingwebS3Storage).
        "BACKEND": "klingweb.storage.KlingwebS3Storage",
        "OPTIONS": {
            "bucket_name": _S3_BUCKET,
            "endpoint_url": _S3_ENDPOINT or None,
            "region_name": _S3_REGION or "us-east-1",
            # None: boto3's credential chain (an instance or task role on AWS).
            "access_key": _S3_ACCESS_KEY or None,
            "secret_key": _S3_SECRET_KEY or None,
            "signature_version": "s3v4",
            # Path-style (endpoint/bucket/key) for S3-compatible servers, which seldom
            # serve bucket subdomains; Amazon S3 itself picks its own style.
            "addressing_style": "path" if _S3_ENDPOINT else "auto",
            # As on disk: a name never silently replaces another file.
            "file_overwrite": False,
            "default_acl": None,  # private objects: read through presigned URLs only
            "querystring_auth": True,
            "querystring_expire": 300,  # seconds; storage.url() is never shown unsigned
            # A file read back (an input sent to Kling) spools to disk above 2 MB (bytes).
            "max_memory_size": 2 * 1024 * 1024,
        },
    }
    # A plain-http endpoint (a local test server) must be allowed to feed <img>/<video>.
    _STORAGE_MEDIA_ORIGINS = (
        [f"{urlsplit(_S3_ENDPOINT).scheme}://{urlsplit(_S3_ENDPOINT).netloc}"]
        if _S3_ENDPOINT.startswith("http://")
        else []
    )
else:
    _DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    _STORAGE_MEDIA_ORIGINS = []
STORAGES = {
    "default": _DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024  # bytes; larger uploads spool to disk
DATA_UPLOAD_MAX_MEMORY_SIZE = 15 * 1024 * 1024  # bytes; non-file POST bodies
# Whole request bodies (klingweb.security.UploadLimitMiddleware answers 413 above these,
# by Content-Length, before reading): forms of images and sound (≤ 10 MB + 10 MB + 5 MB)...
UPLOAD_MAX_REQUEST_BYTES = 25 * 1024 * 1024
# ...and, by URL name, the element form and POST /api/v1/elements (a 200 MB reference
# video, or 4 images of 10 MB).
UPLOAD_LARGE_REQUESTS = {
    "elements-create": 220 * 1024 * 1024,
    "api-elements-create": 220 * 1024 * 1024,
}

# --- Kling --------------------------------------------------------------------------------
KLING_API_BASE_URL = env_url("KLING_API_BASE_URL", "https://api-singapore.klingai.com")
# The operator's default account: an API key (sent as the bearer itself; both API designs),
# or an access key + secret key pair (JWT; the legacy /v1 design only). One kind, not both.
KLING_API_KEY = env_str("KLING_API_KEY")
KLING_ACCESS_KEY = env_str("KLING_ACCESS_KEY")
KLING_SECRET_KEY = env_str("KLING_SECRET_KEY")
if KLING_API_KEY and (KLING_ACCESS_KEY or KLING_SECRET_KEY):
    raise ImproperlyConfigured(
        "Set either KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY — not both kinds "
        "of Kling credentials."
    )
if bool(KLING_ACCESS_KEY) != bool(KLING_SECRET_KEY):
    raise ImproperlyConfigured("Set both KLING_ACCESS_KEY and KLING_SECRET_KEY, or neither.")
KLING_SANDBOX_MODE = env_bool("KLING_SANDBOX_MODE", False)
# Base URLs a team admin may choose as a "custom" region (besides KLING_API_BASE_URL).
KLING_CUSTOM_BASE_URLS = [u.rstrip("/") for u in env_list("KLING_CUSTOM_BASE_URLS")]
KLING_WEBHOOK_SECRET = env_str("KLING_WEBHOOK_SECRET")  # Standard Webhooks secret (whsec_...)
PUBLIC_BASE_URL = env_url("PUBLIC_BASE_URL")  # where Kling can reach us, for callback_url
# A callback token is refused this long after its task was created/submitted (the poller
# keeps the task up to date after that): tasks_app.callbacks.callback_token_expired.
KLING_CALLBACK_MAX_AGE = timedelta(days=env_int("KLING_CALLBACK_MAX_AGE_DAYS", 3, minimum=1))
# Inputs go to Kling as signed URLs valid this long (tasks_app.inputs; a bucket's presigned
# URLs at most 7 days): Kling fetches an input when it starts the task.
KLING_INPUT_URL_MAX_AGE = timedelta(hours=env_int("KLING_INPUT_URL_MAX_AGE_HOURS", 24, minimum=1))
KLING_CONNECT_TIMEOUT = 5.0  # seconds
KLING_READ_TIMEOUT = 30.0  # seconds

# Fernet keys for Kling secret keys at rest: comma-separated, newest first (MultiFernet).
FERNET_KEYS = env_list("FERNET_KEYS")
if PRODUCTION and not FERNET_KEYS:
    # Without it the key would be derived from SECRET_KEY, and rotating SECRET_KEY would
    # make every stored team secret unreadable.
    raise ImproperlyConfigured(
        "FERNET_KEYS must be set in production (KLINGWEB_PRODUCTION=1); generate one with "
        "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'."
    )

# --- Scheduling, polling, budgets ---------------------------------------------------------
POLL_STALE_AFTER_SECONDS = env_int("POLL_STALE_AFTER_SECONDS", 2 * 3600, minimum=60)
# Leases that a crashed process leaves behind (another machine takes the work over once they
# run out): a poll cycle's claim on its tasks (tasks_app.polling.tasks_claim; must outlive one
# cycle) and a worker's claim on one result download (tasks_app.media; a lease shorter than a
# download may let a second worker fetch the same file again, which is harmless but wasted).
POLL_CLAIM_SECONDS = env_int("POLL_CLAIM_SECONDS", 120, minimum=5)  # seconds
MEDIA_DOWNLOAD_LEASE_SECONDS = env_int("MEDIA_DOWNLOAD_LEASE_SECONDS", 600, minimum=5)  # seconds
# Seconds after queuing when the poller's safety net sends a task whose submission job never
# ran, or ran on a worker that died (tasks_app.submission.tasks_submit_due); the job itself
# sends it at once.
SUBMIT_GRACE_SECONDS = env_int("SUBMIT_GRACE_SECONDS", 30, minimum=1)
# Seconds a queued task waits on a paused Kling account (1000–1004, 1100–1102, 1304) before
# it is tried again; a switch of the team's account or a lifted pause sends it at the
# poller's next cycle instead (tasks_app.submission).
PAUSED_RECHECK_SECONDS = env_int("PAUSED_RECHECK_SECONDS", 60, minimum=1)
# A sent task Kling answers "not found" (1203) for on this many consecutive checks spread
# over at least this many seconds becomes "lost at vendor" (tasks_app.services.task_lose).
POLL_LOST_AFTER_CHECKS = env_int("POLL_LOST_AFTER_CHECKS", 3, minimum=1)
POLL_LOST_AFTER_SECONDS = env_int("POLL_LOST_AFTER_SECONDS", 600, minimum=1)
MEDIA_MAX_BYTES = env_int("MEDIA_MAX_BYTES", 500 * 1024 * 1024, minimum=1024)
# Estimates come from the vendor's price table (tasks_app.prices), times this factor.
TASK_COST_MULTIPLIER = env_decimal("TASK_COST_MULTIPLIER", "1")
# Money: the portal's currency, and the money one Kling unit is worth in it (used for ledger
# rows charged in units and for estimates). Default: the vendor's published price of a video
# unit, 0.14 USD (KLING_API_2026.md §8, "a video unit = $0.14").
KLING_CURRENCY = env_str("KLING_CURRENCY", "USD").upper()
KLING_UNIT_PRICE = env_decimal("KLING_UNIT_PRICE", "0.14")

# Task families the portal offers; each names a TaskFamily object (tasks_app.families).
# elements_app plugs its family in here, so tasks_app never imports elements_app.
KLINGWEB_TASK_FAMILIES = [
    "tasks_app.families.AVATAR",
    "tasks_app.families.VIDEO_EXTEND",
    "tasks_app.families.MULTI_SHOT",
    "tasks_app.families.TEXT2VIDEO",
    "tasks_app.families.IMAGE2VIDEO",
    "elements_app.families.ELEMENT",
    "tasks_app.families_v3.T2V_3_0_TURBO",
    "tasks_app.families_v3.I2V_3_0_TURBO",
    "tasks_app.families_v3.T2V_3_0",
    "tasks_app.families_v3.I2V_3_0",
    "elements_app.omni.OMNI_VIDEO_3_0",
    "tasks_app.families_v3.MOTION_3_0",
    "tasks_app.families_v3.MOTION_2_6",
]
# The elements a team may generate with, for tasks_app's forms (motion control 3.0): a
# callable (team) -> [(element_id, label, reference_type)]; elements_app plugs in its library.
KLINGWEB_ELEMENT_CHOICES = "elements_app.omni.element_choices"
# Periodic jobs of plugged-in apps, created by `manage.py setup_schedules` (minutes apart).
KLINGWEB_PLUGIN_SCHEDULES = [
    {"name": "klingweb-element-presets", "func": "elements_app.jobs.sync_presets", "minutes": 360},
    {"name": "klingweb-webhook-retries", "func": "klingweb.api.jobs.webhooks_retry", "minutes": 1},
]
# Called in the transaction that finishes tasks (task_apply_remote, tasks_apply_remote for a
# poll cycle's chunk, or task_refuse for a create Kling refused), dotted paths taking
# ``tasks=`` (a list of finished Task rows).
KLINGWEB_TASK_FINISHED_HOOKS = ["klingweb.api.webhooks.tasks_finished_hook"]
# Called when budget thresholds are announced (budget_alerts_mail, with the alert mail),
# dotted paths taking ``team=``, ``status=``, ``alerts=``.
KLINGWEB_BUDGET_ALERT_HOOKS = ["klingweb.api.webhooks.budget_alert_hook"]
# Origins (scheme://host:port) outbound webhooks may reach on private/loopback addresses.
WEBHOOK_ALLOWED_ORIGINS = env_list("WEBHOOK_ALLOWED_ORIGINS")

# --- Security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool(
    "SECURE_COOKIES", PRODUCTION or (not DEBUG and bool(PUBLIC_BASE_URL))
)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
CSRF_COOKIE_HTTPONLY = True  # the pages carry the token themselves (hx-headers, forms)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# HTTPS. Behind a TLS-terminating proxy set BEHIND_TLS_PROXY=1 (the proxy must set
# X-Forwarded-Proto and strip it from clients), or the redirect loops.
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 86400 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading is the operator's decision (it is hard to undo), so its reminder is silenced.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# Content-Security-Policy (django-csp). No inline script or style anywhere: templates load
# static/js/*.js and static/css/*.css; htmx's indicator <style> is off (base.html meta).
# Results may be shown from the vendor's URLs until kept: images and videos from any https
# host, and from the Kling base URL's origin when it is plain http (the sandbox); kept media
# from the bucket's endpoint when it is plain http (presigned redirects, klingweb.storage).
_KLING_ORIGIN = urlsplit(KLING_API_BASE_URL or "")
_MEDIA_ORIGINS = (
    [f"{_KLING_ORIGIN.scheme}://{_KLING_ORIGIN.netloc}"] if _KLING_ORIGIN.scheme == "http" else []
) + _STORAGE_MEDIA_ORIGINS
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:", "https:", *_MEDIA_ORIGINS],
        "media-src": ["'self'", "blob:", "https:", *_MEDIA_ORIGINS],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Error reports (DEBUG page, mails to ADMINS) hide secret-looking locals in every frame and
# redact callback tokens and JWTs (klingweb.security).
DEFAULT_EXCEPTION_REPORTER = "klingweb.security.SafeExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "klingweb.security.SafeExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Callback tokens, JWTs and secrets never reach a log line (klingweb.redaction).
    "filters": {"redact": {"()": "klingweb.redaction.RedactingFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # Request paths (a callback's carries its token) are logged by these two.
        "django.request": {"filters": ["redact"]},
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
            "filters": ["redact"],
        },
    },
}
