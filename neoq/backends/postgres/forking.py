"""A forked child never shares a PostgreSQL session with its parent.

``os.fork()`` copies the parent's sockets into the child, but a PostgreSQL session serves one
process: two processes writing to one socket interleave their messages. When the child closes an
inherited connection, libpq sends the server a Terminate message that ends the parent's session.
So does the garbage collector, at the latest when the child exits. That is what happens to a
client created at import time in an app server that forks its workers after loading the app
(gunicorn ``--preload``, uWSGI without ``lazy-apps``).

So right after a fork the child points the socket of every connection this process opened at
``/dev/null``: nothing the child does with them reaches the parent's sessions. Then every open
backend forgets its pools and threads. The next use opens connections of the child's own.
This runs in the hooks of ``os.register_at_fork``, which Python runs for ``os.fork()``. uWSGI forks in
C and runs them only with ``py-call-uwsgi-fork-hooks`` (or ``py-call-osafterfork``).
"""

from __future__ import annotations

import os
import weakref
from contextlib import suppress
from typing import Any

__all__ = ["abandon", "track", "track_backend"]

#: Every connection this process opened (psycopg connections, weakly held).
_connections: weakref.WeakSet[Any] = weakref.WeakSet()
#: Every backend opened in this process; each has an ``_after_fork()`` method.
_backends: weakref.WeakSet[Any] = weakref.WeakSet()
#: What a child took over from its parent and will never use: kept, so that no finalizer runs
#: on it at an unexpected moment (its sockets lead nowhere by then).
_abandoned: list[object] = []


def track(conn: Any) -> None:
    """Remember ``conn`` as this process's own (a pool's configure hook, or a direct connect)."""
    _connections.add(conn)


def track_backend(backend: Any) -> None:
    """Remember an open ``backend``: a forked child calls its ``_after_fork()``."""
    _backends.add(backend)


def abandon(thing: object) -> None:
    """Keep ``thing``, inherited from the parent, alive and unused for the child's life."""
    _abandoned.append(thing)


def _after_fork_in_child() -> None:
    # Each step on its own: one that fails (a closed descriptor, no descriptor left for /dev/null)
    # must not keep the backends from forgetting the parent's connections.
    connections = list(_connections)
    _connections.clear()
    try:
        if connections:
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                for conn in connections:
                    with suppress(Exception):  # closed already: no socket to take over
                        os.dup2(devnull, conn.pgconn.socket, inheritable=False)
            finally:
                os.close(devnull)
    finally:
        for backend in list(_backends):
            with suppress(Exception):
                backend._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
