"""A Flask app that hands work to neoq: POST /signup enqueues a welcome email, a worker sends it.

Run it against PostgreSQL (two terminals, from the repository root)::

    export NEOQ_URL=postgresql://postgres@127.0.0.1:5432/postgres
    flask --app examples/flask_app/app.py neoq migrate      # neoq's tables, once per deploy
    flask --app examples/flask_app/app.py neoq worker       # the worker: @nq.handler and @nq.cron functions
    flask --app examples/flask_app/app.py run               # the web app

    curl -X POST -H 'Content-Type: application/json' -d '{"email": "ada@example.com"}' localhost:5000/signup
    curl localhost:5000/jobs/<job_id>                       # {"status": "processed", ...}

The neoq dashboard is mounted at /admin/neoq/ behind the ``admin_required`` decorator (HTTP Basic,
the password in ``FLASK_ADMIN_PASSWORD``; without one, nobody gets in).

``NEOQ_URL`` (or ``FLASK_NEOQ_URL``, read by ``app.config.from_prefixed_env()``) picks the backend.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, abort, current_app, request

from neoq import DuplicateJobError, Job
from neoq.contrib.flask import Neoq

log = logging.getLogger(__name__)

nq = Neoq()


@nq.handler("welcome_emails", concurrency=2, max_retries=5)
def send_welcome_email(job: Job) -> None:
    """Pretend to send an email; a real app would call its mail service here."""
    # Runs inside an application context: current_app and nq.client work here.
    sender = current_app.config.get("WELCOME_SENDER", "hello@example.com")
    current_app.logger.info("welcome email from %s to %s (job %s)", sender, job.payload["email"], job.id)
    sent = current_app.config.get("SENT_EMAILS")
    if sent is not None:  # the tests collect what was "sent"
        sent.append(job.payload["email"])


@nq.cron("0 8 * * *", queue="signup_report")
def signup_report(job: Job) -> None:
    """Every day at 08:00 UTC, ticked by `flask neoq worker` only: web processes never run the schedule."""
    current_app.logger.info("signup report for %s", job.payload["scheduled_at"])


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app factory: configuration from FLASK_* environment variables, then ``config``."""
    app = Flask(__name__)
    app.config.from_prefixed_env()
    app.config.update(config or {})
    nq.init_app(app)

    @app.post("/signup")
    def signup() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True) or {}
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            abort(400, "give a JSON body with an email")
        try:
            job_id = nq.enqueue(Job(queue="welcome_emails", payload={"email": email}))
        except DuplicateJobError as exc:  # the same email is already waiting: fine
            return {"job_id": exc.job_id, "duplicate": True}, 202
        return {"job_id": job_id}, 202

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> dict[str, Any]:
        job = nq.client.get_job(job_id)
        if job is None:
            abort(404)
        return {"id": job.id, "queue": job.queue, "status": job.status.value, "error": job.error}

    @app.route("/admin/neoq/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/admin/neoq/<path:path>", methods=["GET", "POST"])
    @admin_required
    def neoq_dashboard(path: str) -> Response:
        from neoq.dashboard import create_app as create_dashboard

        dashboard = app.extensions.get("neoq_dashboard")
        if dashboard is None:  # made on first use: the client exists once the extension made it
            secret = app.config.get("SECRET_KEY") or None
            dashboard = app.extensions["neoq_dashboard"] = create_dashboard(nq.client, secret=secret)
        return dashboard.mounted(request.environ, "/admin/neoq", path)

    return app


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let a request through only with the admin password (HTTP Basic); an app would use its own login."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        expected = current_app.config.get("ADMIN_PASSWORD")
        given = request.authorization.password if request.authorization else None
        if not expected or not given or not hmac.compare_digest(str(given), str(expected)):
            return Response("Admins only.", 401, {"WWW-Authenticate": 'Basic realm="admin"'})
        return view(*args, **kwargs)

    return guarded
