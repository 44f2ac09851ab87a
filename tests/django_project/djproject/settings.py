"""A small Django project for neoq's integration tests (tests/test_django.py).

The database is ``NEOQ_TEST_DJANGO_DATABASE_URL`` (default: the local PostgreSQL server); neoq uses it
too (no NEOQ setting: the "default" database), and ``django.tasks`` runs on neoq.
"""

import os
from urllib.parse import unquote, urlsplit

import django

_url = urlsplit(os.environ.get("NEOQ_TEST_DJANGO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))

SECRET_KEY = "neoq-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "djproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",  # staff users: the neoq dashboard at /admin/neoq/
    "django.contrib.sessions",
    "neoq.contrib.django",
    "shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the backport of django.tasks

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")) or "postgres",
        "USER": unquote(_url.username or "postgres"),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": str(_url.port or 5432),
        "ATOMIC_REQUESTS": True,  # each request is one transaction: the jobs it enqueues commit with it
    }
}

NEOQ = {"OPTIONS": {"shutdown_timeout": 10}}

TASKS = {
    "default": {
        "BACKEND": "neoq.contrib.django.tasks.NeoqTaskBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"MAX_RETRIES": 0},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"neoq": {"handlers": ["console"], "level": "INFO"}, "shop": {"handlers": ["console"], "level": "INFO"}},
}
