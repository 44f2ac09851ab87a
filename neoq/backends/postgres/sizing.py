"""The PostgreSQL backend's worker pool, sized to the threads that claim: a mixin of ``PostgresBackend``."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings
    from .state import _Pools

__all__ = ["PoolSizing"]


class PoolSizing:
    """``_count_claimer``: one more thread claims, so the worker pool may need one more connection."""

    _lock: threading.Lock
    _claimers: weakref.WeakSet[threading.Thread]
    _pools: _Pools | None
    _settings: Settings
    _pool_max: int

    def _count_claimer(self) -> None:
        """Size the worker pool to the threads that claim: each holds at most one connection."""
        thread = threading.current_thread()
        if thread in self._claimers:
            return
        with self._lock:
            self._claimers.add(thread)
            wanted = len(self._claimers)
            pools = self._pools
            if self._settings.pool_max_fixed is not None or pools is None or wanted <= self._pool_max:
                return
            self._pool_max = wanted
            pools.work.resize(self._settings.pool_min, wanted)
