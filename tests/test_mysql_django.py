"""The Django integration on a MySQL/MariaDB ``default`` database (PyMySQL as Django's MySQLdb).

Django is set up once per process, and tests/test_django.py sets it up on PostgreSQL, so this runs
Django in a subprocess of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neoq.contrib.django.conf import database_url

pytestmark = pytest.mark.mysql

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from urllib.parse import urlsplit
    import pymysql
    pymysql.install_as_MySQLdb()
    import django
    from django.conf import settings
    url = urlsplit(sys.argv[1])
    settings.configure(
        INSTALLED_APPS=["neoq.contrib.django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.mysql", "NAME": url.path.lstrip("/"),
                               "USER": url.username or "root", "PASSWORD": url.password or "",
                               "HOST": url.hostname, "PORT": str(url.port or 3306)}},
        NEOQ={"OPTIONS": {"shutdown_timeout": 5}},
        USE_TZ=True,
    )
    django.setup()
    from django.db import transaction
    import neoq
    from neoq.contrib.django import enqueue, get_client, shutdown_client

    client = get_client()
    out = {"backend": type(client.backend).__name__}
    try:
        with transaction.atomic():
            dropped = enqueue(neoq.Job(queue="dj", payload={"n": "dropped"}))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with transaction.atomic():
        kept = enqueue(neoq.Job(queue="dj", payload={"n": "kept"}))
        out["visible_before_commit"] = client.get_job(kept) is not None
        try:
            enqueue(neoq.Job(queue="dj", payload={"n": "kept"}))
        except neoq.DuplicateJobError as exc:
            out["duplicate_of"] = exc.job_id == kept
    out["dropped"] = client.get_job(dropped) is None
    out["kept"] = client.get_job(kept).status.value
    shutdown_client()
    print(json.dumps(out))
    """
)


def test_enqueue_shares_the_django_transaction_on_mysql(mysql_clean: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mysql_clean], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {
        "backend": "MySQLBackend",
        "visible_before_commit": False,
        "duplicate_of": True,
        "dropped": True,
        "kept": "new",
    }


def test_database_url_of_a_mysql_database() -> None:
    assert (
        database_url(
            "default",
            {"ENGINE": "django.db.backends.mysql", "NAME": "app", "USER": "me", "PASSWORD": "p@ss", "HOST": "db"},
        )
        == "mysql://me:p%40ss@db/app"
    )
    assert (
        database_url("default", {"ENGINE": "django.db.backends.mysql", "NAME": "app", "HOST": "/run/mysqld/s.sock"})
        == "mysql://localhost/app?unix_socket=%2Frun%2Fmysqld%2Fs.sock"
    )
