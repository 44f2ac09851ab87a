"""No secret from a URL in any error text, log line or repr, whatever the URL's shape (neoq.redact)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from cli_helpers import run_neoq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgfixtures import free_port

import neoq
from neoq import cli
from neoq.contrib.django.conf import NeoqSettings
from neoq.redact import mask_secrets, redact_url
from neoq.testing import wait_for

#: Every password below is made of these two halves, so a half shown on its own is caught too.
HALVES = ("Hunter2", "Swordfish")


def leaks(text: str) -> bool:
    return any(half in text for half in HALVES)


def shapes(port: int) -> list[str]:
    """URLs that hold ``Hunter2...Swordfish`` as a password, well and badly written."""
    at = f"127.0.0.1:{port}"
    return [
        "postgres:Hunter2Swordfish@127.0.0.1/x",  # "//" missing: no scheme at all
        "app:Hunter2Swordfish@127.0.0.1/db",  # no scheme
        "Hunter2Swordfish",
        "  postgresql://u:Hunter2Swordfish@127.0.0.1/db",  # leading blanks
        f"postgresql://u:Hunter2Swordfish@{at}/db",  # well formed
        f"postgres://u:Hunter2Swordfish@{at}/db",
        f"postgresql://u:Hunter2@Swordfish@{at}/db",  # "@" in the password, not encoded
        f"postgresql://u:Hunter2/Swordfish@{at}/db",  # "/" in the password
        f"postgresql://u:Hunter2?Swordfish@{at}/db",  # "?" in the password
        f"postgresql://u:Hunter2#Swordfish@{at}/db",  # "#" in the password
        f"postgresql://u:Hunter2 Swordfish@{at}/db",  # a blank in the password
        f"postgresql://u:Hunter2:Swordfish@{at}/db",  # ":" in the password
        f"postgresql://u:Hunter2%40Swordfish@{at}/db",  # percent-encoded
        f"postgresql://u:Hunter2%zzSwordfish@{at}/db",  # broken percent-encoding
        f"postgresql://u@{at}/db?password=Hunter2Swordfish",  # in the query
        f"postgresql://{at}/db?sslpassword=Hunter2Swordfish&password=Hunter2Swordfish",
        f"postgresql:///db?host=127.0.0.1&port={port}&user=u&password=Hunter2Swordfish",
        f"postgresql://u:Hunter2Swordfish@{at},{at}/db",  # several hosts
        f"postgresql://u:Hunter2Swordfish@[::1]:{port}/db",
        "postgresql://postgres:Hunter2Swordfish/x",  # the host forgotten: the password reads as a port
        "POSTGRESQL://u:Hunter2Swordfish@127.0.0.1/db",  # libpq wants the scheme in lower case
        "mysql://u:Hunter2Swordfish@h/db",  # unknown scheme
        "memory://u:Hunter2Swordfish@h",
    ]


SHAPES = shapes(1)


# -- the redaction itself ----------------------------------------------------------------------


@pytest.mark.parametrize("url", SHAPES)
def test_redact_url_never_shows_a_password(url: str) -> None:
    assert not leaks(redact_url(url))
    if url.isalnum() or " " in url.strip():
        return  # a bare password in free text (or one with a blank) looks like words
    # In text neoq did not write (an application's exception, a traceback's source line).
    assert not leaks(mask_secrets(f"failed at {url}: refused"))
    assert not leaks(mask_secrets(f'nq = neoq.new("{url}")'))


def test_redact_url_keeps_the_scheme_host_port_and_database() -> None:
    assert redact_url("postgresql://app:pw@db.example.com:5432/app?sslmode=require") == (
        "postgresql://***@db.example.com:5432/app"
    )
    assert redact_url("postgresql://db/app") == "postgresql://db/app"
    assert redact_url("postgresql://u:p@ss@db/app") == "postgresql://***@db/app"
    assert redact_url("postgresql://u:p?ss@db/app") == "postgresql://***"  # where is the host? not shown
    assert redact_url("postgresql://postgres:secret/x") == "postgresql://***"
    assert redact_url("memory://") == "memory://"
    assert redact_url("host=db port=5432 dbname=app password='a b'") == "host=db port=5432 dbname=app"
    assert redact_url("app:secret@db/app") == "***"
    assert redact_url(None) == "***"


@given(user=st.text(max_size=8), password=st.text(max_size=20), host=st.text(max_size=12))
def test_redact_url_hides_any_password_between_user_and_host(user: str, password: str, host: str) -> None:
    # The password is whatever lies between "user:" and the "@" before the host, unencoded.
    secret = "Hunter2" + password + "Swordfish"
    for url in (f"postgresql://{user}:{secret}@{host}/db", f"{user}:{secret}@{host}/db"):
        assert not leaks(redact_url(url)), url


blank_free = st.text(st.characters(exclude_categories=("Z", "C"), exclude_characters="'\"`"), max_size=12)


@given(user=st.from_regex(r"[A-Za-z0-9._-]{0,8}", fullmatch=True), password=blank_free, host=blank_free)
def test_mask_secrets_hides_a_password_in_free_text(user: str, password: str, host: str) -> None:
    # In free text a URL ends at a blank or a quote; up to there, its password is hidden.
    secret = "Hunter2" + password + "Swordfish"
    for url in (f"postgresql://{user}:{secret}@{host}/db", f"{user}:{secret}@{host}/db"):
        assert not leaks(mask_secrets(f'failed: "{url}" refused')), url


# -- API errors, reprs, log lines -----------------------------------------------------------------


def everything_said(exc: BaseException) -> str:
    """The message, the repr and the whole traceback (causes included) of ``exc``."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the test, at every level, is checked for the password afterwards."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        assert not leaks(record.getMessage()), record.getMessage()
        if record.exc_info:
            assert not leaks("".join(traceback.format_exception(*record.exc_info)))


@pytest.mark.parametrize("url", shapes(free_port()))
def test_new_refuses_or_fails_without_showing_the_password(url: str, records: Any) -> None:
    pytest.importorskip("psycopg")
    try:
        client = neoq.new(url, connect_timeout=2) if not url.startswith("memory") else neoq.new(url)
    except neoq.NeoqError as exc:
        assert not leaks(everything_said(exc)), everything_said(exc)
    else:
        with client:
            assert not leaks(repr(client)) and not leaks(repr(client.backend))


@pytest.mark.parametrize("url", [url for url in shapes(free_port()) if url.startswith("postgres")])
def test_backend_repr_and_errors_never_show_the_password(url: str, records: Any) -> None:
    pytest.importorskip("psycopg")
    from neoq.backends.postgres import PostgresBackend

    try:
        backend = PostgresBackend(url, connect_timeout=2)
    except neoq.ConfigurationError as exc:
        assert not leaks(everything_said(exc))
        return
    assert not leaks(repr(backend))
    with pytest.raises(neoq.BackendConnectionError) as info:
        backend.open()
    assert not leaks(everything_said(info.value))


def test_an_ambiguous_postgresql_url_is_refused_with_what_to_fix() -> None:
    pytest.importorskip("psycopg")
    from neoq.backends.postgres import PostgresBackend

    for url in (
        "postgresql://u:p@ss@db/app",
        "postgresql://u:pa/ss@db/app",
        "postgresql://db/app?application_name=a@b",
    ):
        with pytest.raises(neoq.ConfigurationError, match="%40"):
            PostgresBackend(url)
    with pytest.raises(neoq.ConfigurationError, match=r"port .* is not a number"):
        PostgresBackend("postgresql://postgres:secret/x")
    assert repr(PostgresBackend("postgresql://u:p%40ss@db/app?application_name=a%40b")) == (
        "PostgresBackend('postgresql://***@db/app')"
    )


def test_django_settings_repr_hides_the_password() -> None:
    settings = NeoqSettings(url="postgresql://app:Hunter2Swordfish@db/app", database=None)
    assert not leaks(repr(settings)) and "db/app" in repr(settings)


@pytest.mark.postgres
def test_a_working_client_logs_and_shows_no_password(pg_clean: str, records: Any) -> None:
    # The test server trusts local connections: the password is given, and never asked for.
    parts = urlsplit(pg_clean)
    user, _, host = parts.netloc.rpartition("@")
    url = urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:Hunter2%40Swordfish@{host}"))
    with neoq.new(url) as nq:
        assert not leaks(repr(nq)) and not leaks(repr(nq.backend))
        nq.start("fails", lambda job: 1 / 0, max_retries=0)
        job_id = nq.enqueue(neoq.Job(queue="fails"))
        wait_for(lambda: nq.get_job(job_id).status is neoq.JobStatus.FAILED)  # type: ignore[union-attr]
    assert records.records, "the failed job logged nothing"


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", shapes(free_port()))
def test_cli_errors_never_show_the_password(url: str, capsys: pytest.CaptureFixture[str], records: Any) -> None:
    pytest.importorskip("psycopg")
    for argv in (
        ["--url", url, "stats"],
        ["--traceback", "--url", url, "migrate"],
        ["--url", url, "enqueue", "q", "{}"],
    ):
        cli.main(argv)
        out, err = capsys.readouterr()
        assert not leaks(out + err), out + err


@pytest.mark.parametrize(
    "url",
    [
        "postgres:Hunter2Swordfish@127.0.0.1/x",
        "postgresql://u:Hunter2@Swordfish@127.0.0.1:1/x",
        "postgresql://u:Hunter2Swordfish@127.0.0.1:1/x",
    ],
)
def test_the_neoq_command_never_prints_the_password(url: str) -> None:
    result = run_neoq(["--url", url, "stats"])
    assert result.returncode == 1 and result.stderr.startswith("neoq: error: ")
    assert not leaks(result.stdout + result.stderr), result.stderr
    result = run_neoq(["--traceback", "--url", url, "stats"])
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert not leaks(result.stdout + result.stderr), result.stderr


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


password_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scheme=st.sampled_from(
        ["postgresql://", "postgres://", "postgresql:", "postgres:/", "", "mysql://", "redis://", "rediss://", "memory://"]
    ),
    user=st.sampled_from(["", "app", "u:"]),
    middle=password_text,
    query=st.sampled_from(["", "?sslmode=disable", "?password=Hunter2Swordfish", "?application_name=x"]),
)
def test_any_url_is_refused_or_reported_without_its_password(
    scheme: str, user: str, middle: str, query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the URL, neoq.new() and the command line say nothing of the password."""
    pytest.importorskip("psycopg")
    url = f"{scheme}{user}:Hunter2{middle}Swordfish@127.0.0.1:{free_port()}/db{query}"
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        try:
            with neoq.new(url, **({} if scheme == "memory://" else {"connect_timeout": 2})) as nq:
                said = repr(nq) + repr(nq.backend)
        except neoq.NeoqError as exc:
            said = everything_said(exc)
        cli.main(["--traceback", "--url", url, "stats"])
        out, err = capsys.readouterr()
    finally:
        root.removeHandler(collect)
        root.setLevel(level)
    assert not leaks(said), said
    assert not leaks(out + err), out + err
    assert not any(leaks(line) for line in collect.lines), collect.lines
