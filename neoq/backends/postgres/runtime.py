"""One ``open()`` of the PostgreSQL backend: what it starts and how ``close()`` tears it down.

``start`` connects the listener (migrating the schema on its connection first, when asked), opens
the worker and aux pools and makes the canceller and the attempt counters: a ``state._Pools``.
``stop`` ends them, and the transactions of claims whose handler thread was abandoned. The backend
gives them its settings, its connection factory and narrow callbacks for the listener.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg

from .common import Conn
from .counters import _Counters
from .listener import _Canceller, _Listener
from .pools import Connections
from .settings import Settings
from .settles import close_under_handler
from .state import _drop_count, _Held, _Pools

__all__ = ["start", "stop"]


def start(
    settings: Settings,
    conns: Connections,
    pool_max: int,
    *,
    notify_cancel: Callable[[str], None],
    on_notify: Callable[[str], None],
    recorded_cancels: Callable[[Conn, Iterable[int]], None],
    redeliver_cancels: Callable[[], bool],
    signal_all: Callable[[], None],
    on_pause: Callable[[str], None] | None = None,
) -> _Pools:
    """Connect and open what an ``open()`` uses; the listener and the canceller are not started yet.

    Raises ``BackendConnectionError`` within the connect timeout when the server cannot be reached.
    """
    listen_conn = conns.connect(settings.listen_kwargs)
    try:
        if settings.migrate:
            conns.migrate_on(listen_conn)
        listener = _Listener(
            listen_conn,
            connect=lambda: conns.connect(settings.listen_kwargs),
            on_notify=on_notify,
            recorded_cancels=recorded_cancels,
            redeliver_cancels=redeliver_cancels,
            signal_all=signal_all,
            on_pause=on_pause,
        )
        work, aux = conns.open_pools(pool_max)
    except psycopg.Error as exc:
        listen_conn.close()
        raise conns.wrap(exc, "preparing the neoq schema") from exc
    except BaseException:
        listen_conn.close()
        raise
    counters = _Counters(lambda: conns.connect(settings.counter_kwargs), settings.hot.prepared, conns.wrap)
    return _Pools(work, aux, listener, _Canceller(notify_cancel), counters)


def stop(pools: _Pools, leftover: Iterable[_Held]) -> None:
    """Stop the listener, the canceller and the counters; close the pools and the claims in ``leftover``."""
    pools.closed = True  # before drop_spare: a single enqueue that keeps a spare after it sees it
    pools.listener.stop()
    pools.canceller.stop()
    pools.counters.close()
    pools.drop_spare()
    # Claims whose handler thread was abandoned: end their transactions so nothing stays
    # locked or open. Their late release() finds the connection closed and tolerates it.
    for held in leftover:
        with held.lock:
            _drop_count(held)
            if not held.returned:
                close_under_handler(held)
    pools.work.close(timeout=5.0)
    pools.aux.close(timeout=5.0)
