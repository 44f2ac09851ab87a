"""Who may see the dashboard and change things: authentication, CSRF tokens, safe binding.

- ``PasswordAuth``: HTTP Basic authentication against one password (``neoq dashboard`` reads it
  from ``NEOQ_DASHBOARD_PASSWORD``), compared in constant time; the password is never shown.
- A callable ``auth(request) -> bool``: the host application's own check (a Flask decorator's
  logic, Django's staff flag), for a dashboard mounted in it.
- CSRF: every form carries a token, the HMAC of a random per-browser nonce kept in a cookie
  (``SameSite=Strict``, ``HttpOnly``); a POST whose token does not match its cookie is refused.
- ``check_binding``: an address other than loopback is refused without authentication.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable

from werkzeug.wrappers import Request

from ..errors import ConfigurationError

__all__ = ["PASSWORD_ENV", "Auth", "Csrf", "PasswordAuth", "check_binding", "is_loopback"]

#: The environment variable ``neoq dashboard`` reads the password from.
PASSWORD_ENV = "NEOQ_DASHBOARD_PASSWORD"
#: The cookie that holds the CSRF nonce.
CSRF_COOKIE = "neoq_csrf"


class PasswordAuth:
    """HTTP Basic authentication with one password (any user name, or ``username`` when given)."""

    def __init__(self, password: str, *, username: str | None = None) -> None:
        if not isinstance(password, str) or not password:
            raise ConfigurationError("the dashboard password must be a non-empty string")
        self._digest = hashlib.sha256(password.encode("utf-8")).digest()
        self._username = username

    def __repr__(self) -> str:
        return "PasswordAuth(password='***')"

    def __call__(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep or (self._username is not None and not hmac.compare_digest(user, self._username)):
            return False
        return hmac.compare_digest(hashlib.sha256(password.encode("utf-8")).digest(), self._digest)


#: What ``create_app(auth=...)`` takes: ``PasswordAuth``, a callable deciding per request, or ``None``.
Auth = PasswordAuth | Callable[[Request], bool] | None


class Csrf:
    """Makes and checks the tokens of the dashboard's forms (double submit, signed)."""

    def __init__(self, secret: bytes | str | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._secret = secret or secrets.token_bytes(32)

    def new_nonce(self) -> str:
        """A fresh nonce for the cookie."""
        return secrets.token_urlsafe(24)

    def token(self, nonce: str) -> str:
        """The form token for ``nonce``."""
        return hmac.new(self._secret, nonce.encode("ascii", "replace"), hashlib.sha256).hexdigest()

    def valid(self, request: Request) -> bool:
        """True when the POSTed ``csrf`` field is the token of the request's cookie nonce."""
        nonce = request.cookies.get(CSRF_COOKIE)
        sent = request.form.get("csrf", "")
        if not nonce or not sent:
            return False
        return hmac.compare_digest(self.token(nonce), sent)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, auth: Auth) -> None:
    """Refuse to serve on ``host`` (anything but loopback) with no authentication configured."""
    if auth is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without authentication: set a password in the "
            f"environment variable {PASSWORD_ENV} (HTTP Basic authentication), or mount "
            "neoq.dashboard.create_app() in your Flask or Django application behind its own authentication "
            "(see docs/dashboard.md); without either, keep the default --host 127.0.0.1"
        )
