"""``DashboardApp``: the dashboard as a WSGI application (Werkzeug routing, Jinja2 templates).

Every response is built here: pages (autoescaped templates), the small JSON API the live refresh
polls, the packaged static files, and the POST actions (unless read-only), each confirmed on a
page of its own and guarded by a CSRF token. Mounted under a prefix (``SCRIPT_NAME``), every URL
it makes starts with that prefix.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from ..errors import DuplicateJobError, JobNotFoundError, NeoqError
from ..job import JobStatus
from . import views
from .security import CSRF_COOKIE, Auth, Csrf

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ..app import Neoq

__all__ = ["DashboardApp"]

logger = logging.getLogger(__name__)

#: The most jobs one bulk action changes: each is one ``retry_job``/``cancel_job``, and a request
#: stays short (repeat it for more).
BULK_LIMIT = 1_000
#: Seconds between the live refreshes of the pages.
REFRESH_SECONDS = 2

_STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_HEADERS = {
    # No inline script runs, whatever a payload holds; the page is never framed.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_DONE = {
    "retry": "The job will run again.",
    "cancel": "The job was cancelled (a running one is asked to stop).",
    "bulk-retry": "{n} jobs will run again.",
    "bulk-cancel": "{n} jobs were cancelled.",
}


def _ago(seconds: float | None) -> str:
    """An age for people: ``42s``, ``3m 20s``, ``5h 12m``, ``2d 4h``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


class DashboardApp:
    """The dashboard over one client: call it as a WSGI application."""

    def __init__(
        self, nq: Neoq, *, read_only: bool = False, auth: Auth = None, secret: bytes | str | None = None
    ) -> None:
        self.nq = nq
        self.read_only = read_only
        self.auth = auth
        self.csrf = Csrf(secret)
        rules = [
            Rule("/", endpoint="overview"),
            Rule("/jobs", endpoint="jobs"),
            Rule("/jobs/<job_id>", endpoint="job"),
            Rule("/workers", endpoint="workers"),
            Rule("/api/overview", endpoint="api_overview"),
            Rule("/api/jobs/<job_id>", endpoint="api_job"),
            Rule("/static/<filename>", endpoint="static"),
        ]
        if not read_only:
            rules.append(Rule("/jobs/<job_id>/<any(retry, cancel):action>", endpoint="act", methods=["POST"]))
            rules.append(Rule("/bulk", endpoint="bulk", methods=["POST"]))
        self.urls = Map(rules, strict_slashes=False)
        self.templates = Environment(
            loader=PackageLoader("neoq.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["iso"] = views.iso
        self.templates.filters["ago"] = _ago
        # JSON as text: the template escapes it like any other value (``tojson`` would show ``\u003c``).
        self.templates.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False, sort_keys=True)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        response = self.respond(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def mounted(self, environ: WSGIEnvironment, prefix: str, path: str, body: bytes | None = None) -> Response:
        """Answer a request that a host framework routed to the dashboard; return the response.

        ``prefix``: the URL path where the dashboard is mounted (``/admin/neoq``; the dashboard's
        links start with it); ``path``: the rest of the request's path. ``body``: the request's
        body when the framework has read it already (Django), else it is read from ``environ``.
        The host application authenticates the request before calling this.
        """
        inner = dict(environ)
        inner["SCRIPT_NAME"] = "/" + prefix.strip("/") if prefix.strip("/") else ""
        inner["PATH_INFO"] = "/" + path.lstrip("/")
        if body is not None:
            inner["wsgi.input"] = io.BytesIO(body)
            inner["CONTENT_LENGTH"] = str(len(body))
        # An ASGI server's request (Django under ASGI) has no WSGI keys of its own.
        inner.setdefault("wsgi.url_scheme", "https" if inner.get("HTTPS") == "on" else "http")
        inner.setdefault("wsgi.input", io.BytesIO(b""))
        inner.setdefault("wsgi.errors", sys.stderr)
        inner.setdefault("SERVER_NAME", "localhost")
        inner.setdefault("SERVER_PORT", "80")
        response = Response.from_app(self, inner, buffered=True)
        return response

    # -- dispatch --------------------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        """The response to ``request``: authentication first, then the route."""
        if self.auth is not None and not self.auth(request):
            return Response(
                "Authentication required.",
                401,
                {"WWW-Authenticate": 'Basic realm="neoq dashboard", charset="UTF-8"'},
                mimetype="text/plain",
            )
        adapter = self.urls.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
            if request.method == "POST" and not self.csrf.valid(request):
                raise Forbidden("The form's CSRF token is missing or does not match; reload the page and try again.")
            handler = getattr(self, f"on_{endpoint}")
            response: Response = handler(request, adapter, **values)
            return response
        except MethodNotAllowed as exc:
            text = "This dashboard is read-only." if self.read_only else "Method not allowed."
            return self._error(request, adapter, exc.code or 405, text)
        except HTTPException as exc:
            return self._error(request, adapter, exc.code or 500, exc.description or exc.name)
        except NeoqError as exc:
            # The message may name the store; it goes to the log, never to the page.
            logger.warning("neoq dashboard: %s failed: %s", request.path, exc)
            return self._error(request, adapter, 503, "The job store could not answer; see the server's log.")

    def _error(self, request: Request, adapter: Any, code: int, text: str) -> Response:
        return self._page(request, adapter, "error.html", {"code": code, "text": text}, status=code)

    def _page(self, request: Request, adapter: Any, name: str, context: dict[str, Any], status: int = 200) -> Response:
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not nonce or len(nonce) > 64
        if fresh:
            nonce = self.csrf.new_nonce()
        html = self.templates.get_template(name).render(
            url=lambda endpoint, **values: adapter.build(endpoint, values),
            csrf=self.csrf.token(nonce),
            read_only=self.read_only,
            refresh=REFRESH_SECONDS,
            **context,
        )
        response = Response(html, status, mimetype="text/html")
        if fresh:
            root = request.script_root or ""
            response.set_cookie(CSRF_COOKIE, nonce, path=f"{root}/", httponly=True, samesite="Strict")
        return response

    @staticmethod
    def _now() -> datetime:
        return datetime.now(timezone.utc)

    # -- pages -----------------------------------------------------------------------------

    def on_overview(self, request: Request, adapter: Any) -> Response:
        now = self._now()
        live = views.workers(self.nq)
        context = {
            "page": "overview",
            "overview": views.overview(self.nq, now),
            "running": views.running_jobs(self.nq),
            "chart": views.chart(self.nq, now),
            "schedules": views.schedules(self.nq, live, now),
            "worker_count": len(live),
        }
        return self._page(request, adapter, "overview.html", context)

    def on_jobs(self, request: Request, adapter: Any) -> Response:
        filters = views.Filters.parse(request.args)
        before = request.args.get("before") or None
        page = views.search(self.nq).search_jobs(filters.query(self._now(), before=before))
        done = request.args.get("done", "")
        count = request.args.get("n", "0")
        message = _DONE.get(done, "").format(n=int(count) if count.isdigit() else 0)
        context = {
            "page": "jobs",
            "filters": filters,
            "jobs": page.jobs,
            "next": page.next,
            "next_args": urlencode({**filters.args(), "before": page.next}) if page.next else "",
            "first": before is None,
            "statuses": [status.value for status in JobStatus],
            "ranges": list(views.RANGES),
            "queues": views.queue_names(self.nq, filters.queue),
            "message": message if done.startswith("bulk") else "",
        }
        return self._page(request, adapter, "jobs.html", context)

    def on_job(self, request: Request, adapter: Any, job_id: str) -> Response:
        job = self.nq.get_job(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        done = request.args.get("done", "")
        context = {
            "page": "jobs",
            "job": views.job_view(job),
            "message": _DONE.get(done, "") if done in ("retry", "cancel") else "",
        }
        return self._page(request, adapter, "job.html", context)

    def on_workers(self, request: Request, adapter: Any) -> Response:
        supported = "workers" in self.nq.backend.capabilities
        return self._page(
            request,
            adapter,
            "workers.html",
            {"page": "workers", "workers": views.workers(self.nq), "supported": supported},
        )

    # -- actions (not in read-only mode) -------------------------------------------------------

    def on_act(self, request: Request, adapter: Any, job_id: str, action: str) -> Response:
        job = self.nq.get_job(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        if request.form.get("confirm") != "yes":
            context = {
                "page": "jobs",
                "action": action,
                "job": views.job_view(job),
                "target": adapter.build("act", {"job_id": job_id, "action": action}),
                "fields": {},
            }
            return self._page(request, adapter, "confirm.html", context)
        try:
            if action == "retry":
                self.nq.retry_job(job_id)
            else:
                self.nq.cancel_job(job_id)
        except (DuplicateJobError, JobNotFoundError) as exc:
            return self._error(request, adapter, 409, str(exc))
        return _see_other(adapter.build("job", {"job_id": job_id}) + f"?done={action}")

    def on_bulk(self, request: Request, adapter: Any) -> Response:
        action = request.form.get("action", "")
        if action not in ("retry", "cancel"):
            raise NotFound("Unknown bulk action.")
        filters = views.Filters.parse(request.form)
        if request.form.get("confirm") != "yes":
            context = {
                "page": "jobs",
                "action": action,
                "job": None,
                "filters": filters,
                "target": adapter.build("bulk", {}),
                "fields": {**filters.args(), "action": action},
                "limit": BULK_LIMIT,
            }
            return self._page(request, adapter, "confirm.html", context)
        query = filters.query(self._now(), limit=BULK_LIMIT)
        search = views.search(self.nq)
        count = search.bulk_retry(query, BULK_LIMIT) if action == "retry" else search.bulk_cancel(query, BULK_LIMIT)
        return _see_other(
            adapter.build("jobs", {}) + "?" + urlencode({**filters.args(), "done": f"bulk-{action}", "n": count})
        )

    # -- the live refresh's JSON and the static files ------------------------------------------

    def on_api_overview(self, request: Request, adapter: Any) -> Response:
        overview = views.overview(self.nq, self._now())
        running = [{**job, "url": adapter.build("job", {"job_id": job["id"]})} for job in views.running_jobs(self.nq)]
        return _json({"queues": overview["queues"], "running": running})

    def on_api_job(self, request: Request, adapter: Any, job_id: str) -> Response:
        job = self.nq.get_job(job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.")
        view = views.job_view(job)
        times = {name: views.iso(value) for name, value in view.pop("times")}
        return _json({**view, "times": times})

    def on_static(self, request: Request, adapter: Any, filename: str) -> Response:
        mimetype = _STATIC.get(filename)
        if mimetype is None:
            raise NotFound()
        data = resources.files("neoq.dashboard").joinpath("static").joinpath(filename).read_bytes()
        response = Response(data, mimetype=mimetype)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def _see_other(location: str) -> Response:
    return Response("", 303, {"Location": location})


def _json(data: Any) -> Response:
    return Response(json.dumps(data, default=str), mimetype="application/json")
