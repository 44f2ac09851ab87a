"""Run Django's own ``tests/tasks`` suite against neoq's django.tasks backend (``make test-django-suite``).

Which suite: the ``tests/tasks`` of the installed Django when it has ``django.tasks`` (Django 6+);
with Django 5.2 and the ``django-tasks`` backport (Python < 3.12), the suite of the newest Django
6.0 release, whose API the backport carries, run with the backport imported as ``django.tasks``
(the backport's own tests are not in its package). The Django sdist is fetched once with ``pip
download`` and kept under ``.cache/django-suite/``.

The suite's ``TASKS`` name Django's reference backends; they are rewritten to the stand-ins of
``tests/django_suite/neoq_suite.py`` (``NeoqTaskBackend`` plus what the suite reads), and the tests
of ``tests/django_suite/skips.py`` are skipped (each with its reason). Each store (``memory://``
and PostgreSQL, a database of its own, dropped afterwards) runs in its own process.

    python tools/django_suite.py [--store memory|postgresql ...] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "django-suite"
ADAPTER = ROOT / "tests" / "django_suite"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The reference backends of the suite's settings, and their neoq stand-ins.
REWRITES = {
    "django.tasks.backends.dummy.DummyBackend": "neoq_suite.DummyNeoqBackend",
    "django.tasks.backends.immediate.ImmediateBackend": "neoq_suite.ImmediateNeoqBackend",
}


def suite_version() -> tuple[str, bool]:
    """The Django release whose ``tests/tasks`` to run, and whether the backport stands in for django.tasks."""
    import django

    if django.VERSION >= (6, 0):
        return django.__version__, False
    return "6.0.*", True


def fetch(spec: str) -> Path:
    """The ``tests/tasks`` folder of the Django sdist ``spec`` (``6.0.*`` or a version), fetched once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = sorted(CACHE.glob(f"django-{spec.replace('*', '[0-9]*')}/tests/tasks"))
    if cached:
        return cached[-1]
    download = CACHE / "sdist"
    # The sdist holds the tests (wheels do not). Django 6 needs Python 3.12: ask for its files by version.
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    command += ["--python-version", "3.12", "--dest", str(download), f"django=={spec}"]
    subprocess.run(command, check=True)
    archive = sorted(download.glob("[Dd]jango-*.tar.gz"))[-1]
    name = archive.name[: -len(".tar.gz")].lower()
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[1:3] == ["tests", "tasks"] and m.isfile()]
        for member in members:
            member.name = f"{name}/{'/'.join(member.name.split('/')[1:])}"
            tar.extract(member, CACHE, filter="data")
    return CACHE / name / "tests" / "tasks"


def prepare(source: Path, backport: bool) -> Path:
    """A copy of the suite whose settings name neoq's stand-ins instead of Django's reference backends.

    With the backport, the suite's log assertions name the backport's logger (``django_tasks``).
    """
    target = CACHE / "run" / "tasks"
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(source, target)
    for path in target.glob("*.py"):
        text = path.read_text()
        for old, new in REWRITES.items():
            text = re.sub(rf"([\"']){re.escape(old)}\1", rf"\g<1>{new}\g<1>", text)
        if backport:
            text = re.sub(r"(assert(?:No)?Logs\(\s*)([\"'])django\.tasks\2", r"\1\2django_tasks\2", text)
        path.write_text(text)
    return target.parent


def run_store(store: str, url: str, suite: Path, backport: bool) -> tuple[int, int, int, int]:
    """Run the suite on one store in a child process; return (run, passed, skipped, failed)."""
    env = {
        **os.environ,
        "NEOQ_SUITE_URL": url,
        "NEOQ_SUITE_BACKPORT": "1" if backport else "",
        "DJANGO_SETTINGS_MODULE": "neoq_suite_settings",
        "PYTHONPATH": os.pathsep.join([str(suite), str(ADAPTER), str(ROOT)]),
    }
    child = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, cwd=suite, capture_output=True, text=True, timeout=600
    )
    sys.stderr.write(child.stderr)
    counts = re.search(r"^SUITE run=(\d+) passed=(\d+) skipped=(\d+) failed=(\d+)$", child.stdout, re.M)
    if counts is None:
        print(child.stdout)
        raise SystemExit(f"django suite on {store}: the run did not finish (exit {child.returncode})")
    run, passed, skipped, failed = (int(n) for n in counts.groups())
    return run, passed, skipped, failed


def child() -> int:
    """In the child: set Django up, skip what skips.py names, run the suite, print the counts."""
    import unittest

    if os.environ.get("NEOQ_SUITE_BACKPORT"):
        from neoq_suite import install_backport_alias

        install_backport_alias()
    import django
    from django.core.signals import setting_changed
    from django.test.runner import DiscoverRunner
    from django.test.utils import get_runner  # noqa: F401 - the standard runner, set up as manage.py test does
    from neoq_suite import on_setting_changed
    from skips import BACKPORT_SKIPS, PRIORITY_SKIPS, SKIPS

    from neoq.contrib.django.tasks import NeoqTaskBackend

    django.setup()
    setting_changed.connect(on_setting_changed)
    runner = DiscoverRunner(verbosity=2, interactive=False)
    runner.setup_test_environment()
    suite = runner.build_suite(["tasks"])
    skips = {**SKIPS, **(BACKPORT_SKIPS if os.environ.get("NEOQ_SUITE_BACKPORT") else {})}
    if not NeoqTaskBackend.supports_priority:
        skips.update(PRIORITY_SKIPS)
    for test in _tests(suite):
        reason = skips.get(test.id())
        if reason is not None:
            method = getattr(test, test._testMethodName)  # type: ignore[attr-defined]
            setattr(test, test._testMethodName, unittest.skip(reason)(method))  # type: ignore[attr-defined]
    databases = runner.setup_databases()
    try:
        result = runner.run_suite(suite)
    finally:
        runner.teardown_databases(databases)
        runner.teardown_test_environment()
        from neoq.contrib.django import shutdown_client

        shutdown_client()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    print(f"SUITE run={result.testsRun} passed={result.testsRun - failed - skipped} skipped={skipped} failed={failed}")
    return 0


def _tests(suite: object) -> list[object]:
    import unittest

    found: list[object] = []
    for item in suite:  # type: ignore[attr-defined]
        found.extend(_tests(item) if isinstance(item, unittest.TestSuite) else [item])
    return found


def _pg_database(server_url: str, action: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        if action == "create":
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", choices=["memory", "postgresql"], help="default: both")
    parser.add_argument("--pg-url", default=os.environ.get("NEOQ_TEST_PG_URL", DEFAULT_PG), help="a server to use")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    spec, backport = suite_version()
    source = fetch(spec)
    suite = prepare(source, backport)
    release = source.parent.parent.name
    installed = f"Django {metadata.version('django')}"
    if backport:
        installed += f" with django-tasks {metadata.version('django-tasks')} as django.tasks"
    print(f"Django's tests/tasks of {release} on neoq ({installed})")
    total_failed = 0
    for store in args.store or ["memory", "postgresql"]:
        name = f"neoq_django_suite_{uuid.uuid4().hex[:8]}"
        url = "memory://" if store == "memory" else _pg_database(args.pg_url, "create", name)
        try:
            run, passed, skipped, failed = run_store(store, url, suite, backport)
        finally:
            if store == "postgresql":
                _pg_database(args.pg_url, "drop", name)
        total_failed += failed
        print(f"{store}: {passed} passed, {failed} failed, {skipped} skipped ({run} tests)")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
