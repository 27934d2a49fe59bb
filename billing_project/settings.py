"""Settings come from the environment (and an optional .env beside manage.py).

The defaults give a working first run on SQLite; production sets DATABASE_URL, SECRET_KEY and
DEBUG=False (the app refuses to start with DEBUG off and no SECRET_KEY).
"""

import os
import shlex
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Cron starts jobs with an almost empty environment; reading .env from the project directory
# (not the working directory) makes cron jobs see the same configuration as the shell.
# ENV_FILE points at another file (e.g. /etc/billing/env); `crontab add` writes it into the cron line.
ENV_FILE = os.environ.get("ENV_FILE", "")
environ.Env.read_env(ENV_FILE or BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
LOG_DIR = Path(env.str("LOG_DIR", default=str(BASE_DIR / "logs")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_countries",
    "django_crontab",
    "subscriptions",
    "metering",
    "invoicing",
    "benchmarks",
    "webhooks",
]

MIDDLEWARE = [
    # First: a chunked body must be read (or refused) before anything looks at the request's body.
    "api.middleware.ChunkedRequestBody",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the API docs' static files under gunicorn too, with no web server in front.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "billing_project.urls"
WSGI_APPLICATION = "billing_project.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers wait (up to the
    # timeout) instead of failing with "database is locked" half-way through a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 30})
# Production defaults: a connection is kept for CONN_MAX_AGE seconds (default 60; 0 closes it after
# every request, as Django does by default) instead of a new one per request, and checked before it
# is reused, so a connection the database dropped (restart, failover) is replaced, not failed on.
# A `?conn_max_age=N` in DATABASE_URL is kept unless CONN_MAX_AGE is set.
if "CONN_MAX_AGE" in os.environ or "CONN_MAX_AGE" not in DATABASES["default"]:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Performance (issue 6): the usage-event index carries INCLUDE columns for PostgreSQL's index-only
# scans; SQLite builds the same index without them, which is fine for a development database.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # `manage.py collectstatic` fills it for production
# WhiteNoise warns on every request while the folder is missing (a fresh clone, the tests).
STATIC_ROOT.mkdir(exist_ok=True)

# The invoice run and its log lines, spec section 5. The console shows the bare line; the rotating
# file puts an ISO UTC timestamp in front so that lines from several hosts can be merged and sorted.
(LOG_DIR / "workers").mkdir(parents=True, exist_ok=True)
WORKER_LOG_FORMAT = "[%(levelname)s] %(name)s | run_id=%(run_id)s | %(message)s"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_id": {"()": "invoicing.worker_log.RunIdDefault"}},
    "formatters": {
        # Both escape control characters in messages: one record, one line (D14).
        "worker_console": {"()": "invoicing.worker_log.WorkerLineFormatter", "format": WORKER_LOG_FORMAT},
        "worker_file": {
            "()": "invoicing.worker_log.UTCISOFormatter",
            "format": "%(asctime)s " + WORKER_LOG_FORMAT,
        },
    },
    "handlers": {
        "worker_console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "worker_console",
            "filters": ["run_id"],
        },
        **{
            f"{worker}_file": {
                "class": "invoicing.worker_log.RunLogFileHandler",  # RotatingFileHandler, cheaper per line
                "filename": str(LOG_DIR / "workers" / f"{worker}.log"),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 5,
                "encoding": "utf-8",
                "delay": True,
                "formatter": "worker_file",
                "filters": ["run_id"],
            }
            for worker in ("invoice_generator", "invoice_finalizer")
        },
    },
    "loggers": {
        f"worker.{worker}": {
            "handlers": ["worker_console", f"{worker}_file"],
            "level": "INFO",
            "propagate": False,
        }
        for worker in ("invoice_generator", "invoice_finalizer")
    },
}

# --- HTTP API (api app): DRF, django-filter, drf-spectacular -------------------------------------
INSTALLED_APPS += ["rest_framework", "django_filters", "drf_spectacular", "drf_spectacular_sidecar", "api"]
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.authentication.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 50,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Billing engine API",
    "DESCRIPTION": (
        "Usage-based billing: customers, meters, plans, subscriptions, usage events and invoices. "
        "Authenticate with `Authorization: Bearer <API key>` (`manage.py create_api_key <org-slug>`). "
        "Amounts are decimal strings with the currency's minor unit. Errors are JSON: "
        '`{"detail": "..."}` or a field map `{"field": ["message"]}`. Every creating POST accepts an '
        "`Idempotency-Key` header (24 hours)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI from our own static files: the docs page must work on a machine with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.path_ids_are_positive_integers",
        "api.schema.lists_have_their_bounds",
        "api.schema.request_decimals_are_plain",
        "api.schema.kinds_decide_their_fields",
        "api.schema.pricing_models_decide_their_terms",
        "api.schema.terms_are_answered_as_strings",
        "api.schema.request_texts_are_trimmed_and_without_nul",
        "api.schema.request_identifiers_refuse_control_characters",
    ],
    "ENUM_NAME_OVERRIDES": {
        "InvoiceStatusEnum": "invoicing.models.Invoice.Status",
        "SubscriptionStatusEnum": "subscriptions.models.Subscription.Status",
        "KindEnum": "invoicing.models.InvoiceLineItem.Kind",
        "CreditEntryKindEnum": "invoicing.models.CreditLedgerEntry.Kind",
    },
}

# -- Operations: cron (django-crontab), spec section 5 ----------------------------------------------
# `manage.py crontab add` writes one line per job into the user's crontab, e.g.
#   0 * * * * /srv/billing/.venv/bin/python /srv/billing/manage.py crontab run <hash> >> logs/cron.log 2>&1
# The line names this interpreter (the virtualenv's) and this checkout's manage.py by absolute path,
# so it does not depend on cron's PATH or working directory; settings then read BASE_DIR/.env (or
# ENV_FILE), so the job sees the same DATABASE_URL and the rest as the shell.
# Processes `generate_invoices` starts on PostgreSQL when not given --workers (cron's line too);
# they share the due subscriptions through SKIP LOCKED. One connection each.
INVOICE_RUN_WORKERS = env.int("INVOICE_RUN_WORKERS", default=2)
CRONJOBS = [
    ("0 * * * *", "invoicing.cron.generate_invoices"),
    ("*/5 * * * *", "invoicing.cron.finalize_invoices"),
    ("* * * * *", "webhooks.cron.send_webhooks"),
]
CRONTAB_DJANGO_PROJECT_NAME = "billing_project"
CRONTAB_DJANGO_MANAGE_PATH = str(BASE_DIR / "manage.py")
CRONTAB_PYTHON_EXECUTABLE = sys.executable
# One checkout's `crontab remove` must not remove another checkout's jobs.
CRONTAB_COMMENT = f"billing-engine jobs for {BASE_DIR}"
CRONTAB_COMMAND_PREFIX = f"ENV_FILE={shlex.quote(ENV_FILE)}" if ENV_FILE else ""
CRONTAB_COMMAND_SUFFIX = f">> {shlex.quote(str(LOG_DIR / 'cron.log'))} 2>&1"
# No lock file: concurrent runs (two hosts, cron plus a manual run) share the work through
# SELECT ... FOR UPDATE SKIP LOCKED instead, and a lock file could outlive a crashed host.
CRONTAB_LOCK_JOBS = False
LOGGING["loggers"]["django_crontab"] = {"handlers": ["cron_console"], "level": "INFO", "propagate": False}
LOGGING["handlers"]["cron_console"] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}

# -- Operations: errors (hostile review D7) ---------------------------------------------------------
# Every unexpected exception is logged with its traceback: Django's own (`django.request`, a 500 it
# answered) and the API's (api.errors: a bug answered as a JSON 500, a database outage as a JSON 503)
# reach the root logger, which writes ERROR and above to stderr (gunicorn's error log, the console)
# and to LOG_DIR/errors.log. The worker loggers keep their own handlers and do not propagate.
LOGGING["formatters"]["errors"] = {
    "()": "invoicing.worker_log.UTCISOFormatter",
    "format": "%(asctime)s [%(levelname)s] %(name)s pid=%(process)d | %(message)s",
}
LOGGING["handlers"]["errors_console"] = {
    "class": "logging.StreamHandler",
    "stream": "ext://sys.stderr",
    "formatter": "errors",
    "level": "ERROR",
}
LOGGING["handlers"]["errors_file"] = {
    "class": "logging.handlers.RotatingFileHandler",
    "filename": str(LOG_DIR / "errors.log"),
    "maxBytes": 10 * 1024 * 1024,
    "backupCount": 5,
    "encoding": "utf-8",
    "delay": True,
    "formatter": "errors",
    "level": "ERROR",
}
LOGGING["root"] = {"handlers": ["errors_console", "errors_file"], "level": "WARNING"}
# Sentry when SENTRY_DSN is set (nothing is sent otherwise): Django's integration reports unhandled
# exceptions and api.errors sends the same signal for the ones it answers; ERROR log lines with a
# traceback elsewhere (the workers' included) become events through the logging integration.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        send_default_pii=False,  # no API keys, customer names or bodies leave the host
        traces_sample_rate=0,
    )

# -- Operations: security (manage.py check --deploy is clean with DEBUG=False) ---------------------
# Each setting can be switched by the environment; with DEBUG off the defaults are the safe ones.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    # Only behind a proxy that terminates TLS and always sets this header itself.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Request bodies: a 1000-event batch is ~0.4 MB; 5 MB leaves room and refuses anything absurd.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=5 * 1024 * 1024)

# -- Webhooks (spec section 11, issue 15) ----------------------------------------------------------
# Destinations on loopback, private, link-local (cloud metadata) or otherwise non-public addresses are
# refused at registration and at delivery unless this is true (development and tests only).
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", default=False)
WEBHOOKS_TIMEOUT_SECONDS = env.float("WEBHOOKS_TIMEOUT_SECONDS", default=15.0)
# Threads of one `send_webhooks` process, and how many of them one endpoint may hold at once.
WEBHOOKS_CONCURRENCY = env.int("WEBHOOKS_CONCURRENCY", default=16)
WEBHOOKS_CONCURRENCY_PER_ENDPOINT = env.int("WEBHOOKS_CONCURRENCY_PER_ENDPOINT", default=8)
