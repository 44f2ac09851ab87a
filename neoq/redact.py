"""What of a backend URL neoq may show in an error message, a log line or a repr.

A URL may hold a password (``user:password@host``, ``?password=...``), and a URL written wrongly
may hold it anywhere: ``postgres:secret@host/db`` (no ``//``), ``user:p@ss@host`` (an ``@`` not
written ``%40``), ``user:pa/ss@host``, ``postgresql://user:secret/db`` (no host). So neoq never
shows a URL as it was given: everything it prints of one goes through ``redact_url``, which keeps
the scheme, the host, the port and the path (the database), and hides the rest. When it cannot
tell where the host is, it shows the scheme alone; with no scheme, nothing.
"""

from __future__ import annotations

import re

__all__ = ["HIDDEN", "mask_secrets", "redact_url", "url_scheme"]

#: What stands for the hidden part of a URL.
HIDDEN = "***"

# RFC 3986's scheme: a letter, then letters, digits, "+", "-", "."; then "://".
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,39})://")
# One host of the (comma-separated) host list, with an optional numeric port. A "port" that is
# not a number is most likely a password written without its host (user:secret/db).
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9._~%-]*)(?::[0-9]*)?")
_PATH = re.compile(r"[A-Za-z0-9._~%+/-]*")
# libpq's key=value form: every pair must parse, or nothing of it is shown.
_CONNINFO_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)\s*")
_CONNINFO_SHOWN = ("host", "hostaddr", "port", "dbname")
_CONNINFO_VALUE = re.compile(r"[A-Za-z0-9._~%,:/\[\]-]+")
# In free text: a scheme:// and what follows up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`]*")
# In free text: user:password@host without a scheme (the URL missing its "scheme://").
_USERINFO_IN_TEXT = re.compile(r"(?P<user>[^\s'\"`:@/]*):(?!//)[^\s'\"`]*@")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\b\w*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def url_scheme(url: object) -> str | None:
    """The scheme of ``url`` in lower case (``"postgresql"``); ``None`` unless it starts with ``scheme://``."""
    if not isinstance(url, str):
        return None
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def redact_url(url: object) -> str:
    """Return ``url`` as neoq shows it: ``scheme://***@host:port/path``, never a user, password or query.

    Whatever its shape: a part that could hold a password is replaced by ``***``; a URL whose
    host cannot be told for sure shows as ``scheme://***``, and a text that does not start with
    ``scheme://`` as ``***`` (libpq's ``host=... dbname=...`` form shows those two and the port).
    """
    if not isinstance(url, str):
        return HIDDEN
    match = _SCHEME.match(url)
    if match is None:
        return _redact_conninfo(url)
    scheme = match.group(1).lower()
    rest = url[match.end() :]
    # The query and fragment are never shown. An "@" past their start means the userinfo may
    # reach into them (a password holding "?" or "#"), or that one of them holds an "@": the
    # host cannot be told for sure.
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in rest[len(head) :]:
        return f"{scheme}://{HIDDEN}"
    # Everything up to the last "@" may be credentials, an unencoded "@" of a password included.
    _credentials, at, location = head.rpartition("@")
    hosts, slash, path = location.partition("/")
    if not all(_HOST_PORT.fullmatch(host) for host in hosts.split(",")):
        return f"{scheme}://{HIDDEN}"
    shown = f"{scheme}://{HIDDEN + '@' if at else ''}{hosts}"
    if slash:
        shown += "/" + (path if _PATH.fullmatch(path) else HIDDEN)
    return shown


def _redact_conninfo(text: str) -> str:
    position, shown = 0, []
    while position < len(text):
        pair = _CONNINFO_PAIR.match(text, position)
        if pair is None or pair.end() == position:
            return HIDDEN
        key, value = pair.group(1), pair.group(2)
        if key in _CONNINFO_SHOWN and _CONNINFO_VALUE.fullmatch(value):
            shown.append(f"{key}={value}")
        position = pair.end()
    return " ".join(shown) if shown else HIDDEN


def _redact_found(found: re.Match[str]) -> str:
    # Punctuation that ends a URL in a sentence ("at postgresql://host/db: refused") stays as it was.
    url = found.group(0)
    end = len(url.rstrip(":;,.)]"))
    return redact_url(url[:end]) + url[end:]


def mask_secrets(text: str) -> str:
    """Return ``text`` with every URL in it redacted (``redact_url``) and ``password=`` values hidden.

    For text neoq did not write itself (an exception from an application's module, a traceback),
    as a last line of defence; neoq's own messages show URLs through ``redact_url`` only.
    """
    text = _URL_IN_TEXT.sub(_redact_found, text)
    text = _USERINFO_IN_TEXT.sub(f"\\g<user>:{HIDDEN}@", text)
    return _KEYWORD_PASSWORD.sub(f"\\g<head>{HIDDEN}", text)
