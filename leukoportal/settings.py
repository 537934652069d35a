"""LeukoPortal settings: one module, every deployment-specific value from the environment.

Embedded default (nothing set): SQLite and a filesystem Celery broker under ``var/``.
Production / tests: ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis).
"""
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_choice, env_float, env_int, env_list, env_str, secret_key_file

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LEUKOPORTAL_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# The embedded default (no DATABASE_URL): SQLite and a filesystem broker under var/, served on this
# machine over plain HTTP (`make run`, the README's manage.py commands). A deployment sets DATABASE_URL.
EMBEDDED = not env_str("DATABASE_URL")
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-development-key-only-for-debug"
    elif EMBEDDED:
        SECRET_KEY = secret_key_file(VAR_DIR / "secret_key")  # made on first run (mode 0600), then reused
    else:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (a deployment with DATABASE_URL set); "
                                   "only the embedded default makes its own, under var/.")

_LOCAL = DEBUG or EMBEDDED  # plain HTTP on this machine: no HTTPS redirect, no secure-only cookies
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if _LOCAL else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "leukoportal.apps.LabAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "leukoportal.apps.LeukoPortalConfig",
    "sources",
    "annotations",
    "classifier",
    "reports",
    "slides",
    "competency",
    "lis",
    "backup",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.IdleTimeoutMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.SecondFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "leukoportal.middleware.SecurityHeadersMiddleware",
    "leukoportal.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "leukoportal.urls"
WSGI_APPLICATION = "leukoportal.wsgi.application"

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
                "leukoportal.roles.roles_context",
                "leukoportal.nav.nav_context",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
_default_db = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one SQLite file: wait for locks, write-ahead log.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "leukoportal.roles.LabAdminPermissionBackend",
]
# Directory sign-in (LDAP / Active Directory through django-auth-ldap) when LDAP_SERVER_URI is set; local
# accounts (the demo's, a break-glass lab admin) keep working beside it. accounts/directory_config.py
# reads the LDAP_* variables (README, "Deployments").
from accounts.directory_config import directory_settings  # noqa: E402

AUTH_LDAP_SERVER_URI = ""
globals().update(directory_settings(__import__("os").environ))
if env_str("LDAP_SERVER_URI"):
    AUTHENTICATION_BACKENDS.insert(0, "accounts.directory.DirectoryBackend")
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "LeukoPortal")  # the name authenticator apps show
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Failed attempts per username+IP per 15 min, counted in the default cache: with CACHE_URL (Redis) every web
# host shares the count; without it, the file cache under var/ counts per machine (the embedded default).
LOGIN_RATE_LIMIT = env_int("LOGIN_RATE_LIMIT", 10)

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # collectstatic; WhiteNoise serves it
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_ROOT = BASE_DIR / "static" / "root"  # served at the site's root: /favicon.ico
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Uploads --------------------------------------------------------------------------------
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 64 * 1024 * 1024)  # one image file
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 40_000_000)  # 6000x4000 fields fit, bombs do not
ZIP_MAX_BYTES = env_int("ZIP_MAX_BYTES", 512 * 1024 * 1024)  # the archive itself
ZIP_MAX_UNCOMPRESSED = env_int("ZIP_MAX_UNCOMPRESSED", 2 * 1024 * 1024 * 1024)
ZIP_MAX_ENTRIES = env_int("ZIP_MAX_ENTRIES", 10_000)
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 200)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DATA_UPLOAD_MAX_NUMBER_FILES", 500)

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not _LOCAL)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not _LOCAL)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not _LOCAL)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if _LOCAL else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not _LOCAL
SECURE_HSTS_PRELOAD = not _LOCAL
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "leukoportal.auth.ExpiringTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["leukoportal.roles.IsLabeller"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "leukoportal.schema.LeukoAutoSchema",
    "EXCEPTION_HANDLER": "leukoportal.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"login": "10/min"},
}
API_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 24 * 30)
SPECTACULAR_SETTINGS = {
    "TITLE": "LeukoPortal API",
    "DESCRIPTION": "White-cell images, expert labels, classifier versions, slides and reports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["leukoportal.roles.IsLabeller"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Two choice sets share the field name "kind": the slide's keeps its name, the LIS destination's is named apart.
    "ENUM_NAME_OVERRIDES": {"KindEnum": "slides.models.Slide.Kind",
                            "LisDestinationKindEnum": "lis.models.Destination.Kind"},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # A URL served by one view per method (leukoportal.api_routing.by_method) lists each method's own operation.
    "PREPROCESSING_HOOKS": ["leukoportal.api_routing.split_by_method"],
}

# --- Celery ---------------------------------------------------------------------------------
_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # The workers' and beat's connections. A request never waits on these: leukoportal/queueing.py
    # publishes once with its own sub-second bound and the sweep below enqueues again what was missed.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 10}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", None)
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "classifier.tasks.classify_images": {"queue": "inference"},
    "classifier.tasks.train_model_version": {"queue": "training"},
    "reports.tasks.gate_model_version": {"queue": "training"},  # linked after training, on the same worker
    "reports.tasks.evaluate_model_version": {"queue": "inference"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 4 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 4 * 3600 - 60)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Fixed housekeeping, written to django-celery-beat's table when beat starts (hence its option names);
# the nightly retraining is a row of that table, editable on the training page. The sweep enqueues
# again work whose message was lost and queues again slides whose worker died (leukoportal/services.py);
# a sweep message that waited longer than one period is dropped, so a worker back from an outage does
# not run a backlog of them.
CELERY_BEAT_SCHEDULE = {
    "sweep": {"task": "leukoportal.tasks.sweep", "schedule": 60.0, "options": {"expire_seconds": 60}},
    # LIS messages whose retry is due (a backstop: a delivery task schedules its own next try).
    "lis-deliver-due": {"task": "lis.tasks.deliver_due", "schedule": 30.0, "options": {"expire_seconds": 30}},
}
# The nightly backup (backup/): a new folder under BACKUP_DIR at BACKUP_HOUR:00 (TIME_ZONE), the
# BACKUP_KEEP newest kept. Without BACKUP_DIR nothing is scheduled and the lab admin's home page says so.
BACKUP_DIR = env_str("BACKUP_DIR", "")
BACKUP_HOUR = env_int("BACKUP_HOUR", 2)
if not 0 <= BACKUP_HOUR <= 23:
    raise ImproperlyConfigured(f"BACKUP_HOUR={BACKUP_HOUR} is not an hour (0-23).")
BACKUP_KEEP = env_int("BACKUP_KEEP", 14)
BACKUP_MAX_AGE_HOURS = env_int("BACKUP_MAX_AGE_HOURS", 26)  # older than this, the home page says "missing"
if BACKUP_DIR:
    from celery.schedules import crontab

    CELERY_BEAT_SCHEDULE["backup-nightly"] = {"task": "backup.nightly", "schedule": crontab(minute=0, hour=BACKUP_HOUR)}
CELERY_TASK_ALWAYS_EAGER = False

# --- Classifier -----------------------------------------------------------------------------
CLASSIFIER_DEVICE = env_choice("CLASSIFIER_DEVICE", "auto", {"auto", "cpu", "cuda"})
# how the frozen layers run on the CPU: auto = OpenVINO when installed, else PyTorch (classifier/ml/runtime.py)
CLASSIFIER_RUNTIME = env_choice("CLASSIFIER_RUNTIME", "auto", {"auto", "torch", "openvino"})
CLASSIFIER_DEFAULT_ENSEMBLE = env_choice("CLASSIFIER_DEFAULT_ENSEMBLE", "offline", {"offline", "paper"})
MODEL_DIR = Path(env_str("MODEL_DIR", str(VAR_DIR / "models")))
FEATURE_CACHE_DIR = Path(env_str("FEATURE_CACHE_DIR", str(VAR_DIR / "feature-cache")))
CLASSIFIER_THRESHOLD = env_float("CLASSIFIER_THRESHOLD", 0.0)  # 0 = the model's own calibrated default
AUTO_CLASSIFY_UPLOADS = env_bool("AUTO_CLASSIFY_UPLOADS", True)
# Tests and fault benchmarks only: train on random-initialised backbones ("none") with recipe
# overrides (JSON, e.g. {"input_size": 64}), so that no pretrained weights are needed.
CLASSIFIER_TRAIN_WEIGHTS = env_choice("CLASSIFIER_TRAIN_WEIGHTS", "imagenet", {"imagenet", "none"})
CLASSIFIER_TRAIN_OVERRIDES = __import__("json").loads(env_str("CLASSIFIER_TRAIN_OVERRIDES", "{}") or "{}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Cache (login rate limiting, thumbnails) -------------------------------------------------
_cache_url = env_str("CACHE_URL", None)
if _cache_url:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- LIS interface (lis/) -------------------------------------------------------------------
# Destinations preset from the environment (made or updated when the delivery sweep runs, marked
# "preset"); the lab admin adds others on the LIS interface page.
LIS_MLLP_HOST = env_str("LIS_MLLP_HOST", "")
LIS_MLLP_PORT = env_int("LIS_MLLP_PORT", 0)
LIS_MLLP_TLS = env_bool("LIS_MLLP_TLS", False)
LIS_SENDING_APPLICATION = env_str("LIS_SENDING_APPLICATION", "LEUKOPORTAL")
LIS_SENDING_FACILITY = env_str("LIS_SENDING_FACILITY", "")
LIS_RECEIVING_APPLICATION = env_str("LIS_RECEIVING_APPLICATION", "")
LIS_RECEIVING_FACILITY = env_str("LIS_RECEIVING_FACILITY", "")
LIS_FHIR_BASE_URL = env_str("LIS_FHIR_BASE_URL", "")
LIS_FHIR_TOKEN = env_str("LIS_FHIR_TOKEN", "")
# Delivery defaults of a new destination: answer time-out, attempts, first wait (doubled each try), longest wait.
LIS_TIMEOUT_S = env_float("LIS_TIMEOUT_S", 10.0)
LIS_MAX_ATTEMPTS = env_int("LIS_MAX_ATTEMPTS", 10)
LIS_BACKOFF_S = env_float("LIS_BACKOFF_S", 5.0)
LIS_BACKOFF_MAX_S = env_float("LIS_BACKOFF_MAX_S", 600.0)
# A message still queued after this long shows on the lab admins' home page.
LIS_QUEUED_ALERT_S = env_int("LIS_QUEUED_ALERT_S", 900)
# The order listener (manage.py lis_listen).
LIS_LISTEN_HOST = env_str("LIS_LISTEN_HOST", "127.0.0.1")
LIS_LISTEN_PORT = env_int("LIS_LISTEN_PORT", 2575)
