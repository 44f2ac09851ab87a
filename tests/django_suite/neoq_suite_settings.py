"""Settings of Django's ``tests/tasks`` run on neoq (``tools/django_suite.py``): neoq's store is NEOQ_SUITE_URL."""

import os

import django

SECRET_KEY = "neoq-django-suite"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "neoq.contrib.django", "tasks"]
if django.VERSION < (6, 0):
    INSTALLED_APPS.insert(1, "django_tasks")
# Django's own tables (its TransactionTestCase) in SQLite; neoq's jobs in its own store.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
NEOQ = {"URL": os.environ["NEOQ_SUITE_URL"], "DATABASE": None, "OPTIONS": {"shutdown_timeout": 5}}
TASKS = {"default": {"BACKEND": "neoq.contrib.django.tasks.NeoqTaskBackend"}}
