"""Backends by URL scheme: the ``neoq.backends`` entry points.

A package makes a backend reachable as ``neoq.new("scheme://...")`` with an entry point in the group
``neoq.backends`` whose name is the scheme and whose value is the backend class (a subclass of
``neoq.backends.Backend`` that implements ``from_url``)::

    [options.entry_points]          # setup.cfg; in pyproject.toml: [project.entry-points."neoq.backends"]
    neoq.backends =
        mystore = mystore_neoq:MyStoreBackend

neoq registers its own schemes the same way. When neoq runs from a source tree that was never
installed (so its entry points are absent), its own schemes come from a table here, so they work
all the same; an installed entry point always wins over that table.

``neoq.new(url)``, ``NEOQ_URL`` and the CLI's ``--url`` all come through ``backend_from_url``.
Nothing here shows more of a URL than its scheme: a URL written wrongly may hold its password
anywhere (``neoq.redact``).
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..redact import url_scheme
from .base import Backend

if TYPE_CHECKING:
    from ..clock import Clock

__all__ = ["ENTRY_POINT_GROUP", "backend_class", "backend_from_url", "schemes"]

#: The entry-point group that names backends by URL scheme.
ENTRY_POINT_GROUP = "neoq.backends"


def _memory() -> type[Backend]:
    from .memory import MemoryBackend

    return MemoryBackend


def _postgres() -> type[Backend]:
    from .postgres import PostgresBackend

    return PostgresBackend


def _mysql() -> type[Backend]:
    from .mysql import MySQLBackend

    return MySQLBackend


#: neoq's own schemes, used only when the entry point of the scheme is absent (neoq not installed
#: as a distribution). The same as setup.cfg's ``neoq.backends`` entry points, in the order errors list them.
_OWN: dict[str, Callable[[], type[Backend]]] = {
    "memory": _memory,
    "postgresql": _postgres,
    "postgres": _postgres,
    "mysql": _mysql,
    "mariadb": _mysql,
}

_lock = threading.Lock()
# Reading the entry points scans every installed distribution (milliseconds): done once per process,
# and again only when a scheme is not found (a package installed since, by this process).
_cached: dict[str, list[importlib.metadata.EntryPoint]] | None = None


def _entry_points(refresh: bool = False) -> dict[str, list[importlib.metadata.EntryPoint]]:
    global _cached
    with _lock:
        if _cached is None or refresh:
            found: dict[str, list[importlib.metadata.EntryPoint]] = {}
            for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                same = found.setdefault(entry.name.lower(), [])
                # A distribution seen twice on sys.path (an editable install beside a build) is one.
                if all(other.value != entry.value for other in same):
                    same.append(entry)
            _cached = found
        return _cached


def schemes() -> list[str]:
    """The URL schemes a backend is registered for: neoq's own first, then the others in order."""
    registered = _entry_points()
    return [*_OWN, *sorted(set(registered) - set(_OWN))]


def _accepted() -> str:
    return ", ".join(f"{scheme}://" for scheme in schemes())


def backend_class(scheme: str) -> type[Backend]:
    """The backend class registered for ``scheme`` (lower case, without ``://``).

    Raises ``ConfigurationError`` for a scheme nothing registers (naming the accepted ones), for
    one that two installed packages register, and for a backend that cannot be imported.
    """
    entries = _entry_points().get(scheme)
    if entries is None and scheme not in _OWN:
        entries = _entry_points(refresh=True).get(scheme)
    if not entries:
        own = _OWN.get(scheme)
        if own is None:
            raise ConfigurationError(
                f"unknown backend URL scheme {scheme}://; accepted: {_accepted()} "
                "(or pass backend=<a neoq.backends.Backend>)"
            )
        return own()
    if len(entries) > 1:
        raise ConfigurationError(
            f"the backend URL scheme {scheme}:// is registered more than once ({', '.join(e.value for e in entries)}): "
            "uninstall all but one of the packages that provide them"
        )
    entry = entries[0]
    try:
        loaded = entry.load()
    except ImportError as exc:
        raise ConfigurationError(
            f"the backend for {scheme}:// ({entry.value}) cannot be imported: {exc}; "
            f"install the package that provides it, with its extras"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
        raise ConfigurationError(
            f"the entry point {scheme} of {ENTRY_POINT_GROUP} names {entry.value}, "
            "which is not a neoq.backends.Backend subclass"
        )
    return loaded


def backend_from_url(url: str, *, clock: Clock | None = None, **options: Any) -> Backend:
    """Build, without opening it, the backend that ``url``'s scheme names: ``cls.from_url(url, ...)``.

    ``options`` are the backend's own (``neoq.new()``'s extra keyword arguments); ``clock`` is the
    client's. Raises ``ConfigurationError`` for a URL that is not a string or has no
    ``scheme://``, and as ``backend_class`` and the backend's ``from_url`` do.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a str, not {type(url).__name__}")
    scheme = url_scheme(url)
    if scheme is None:
        raise ConfigurationError(
            f"the backend URL does not start with scheme://; accepted: {_accepted()} "
            "(the URL is not shown: it may hold a password)"
        )
    return backend_class(scheme).from_url(url, clock=clock, **options)
