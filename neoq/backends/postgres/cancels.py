"""The cancellation requests this process has seen: who hears of them, and for how long."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from .common import Conn
from .queries import QUERIES
from .state import _Held, _Pools

#: How long (seconds) a cancellation is re-delivered to the runtime, and remembered for a job whose
#: claim is still on its way.
_CANCEL_MEMORY = 2.0


class _Cancels:
    """Cancellation requests recorded in the store for jobs this process may hold.

    ``lock`` guards ``claims`` (job id -> the claim that holds it in this process) and ``seen``;
    ``current`` returns the pools of the current ``open()``, whose canceller tells the runtime.
    """

    def __init__(self, lock: threading.Lock, claims: dict[str, _Held], current: Callable[[], _Pools | None]) -> None:
        self._lock = lock
        self._claims = claims
        self._current = current
        #: job id -> when a cancellation for it arrived (time.monotonic()).
        self.seen: dict[str, float] = {}

    def register(self, held: _Held) -> bool:
        """Register a claim of this process; True when a cancellation of its job arrived since
        its claim query was sent (one that arrived meanwhile may have missed its snapshot)."""
        with self._lock:
            self._claims[held.job_id] = held
            seen = self.seen.get(held.job_id)
        return seen is not None and seen >= held.claimed_at

    def forget(self, held: _Held) -> None:
        """The claim ended: forget it, and any cancellation seen for its job."""
        with self._lock:
            if self._claims.get(held.job_id) is held:
                del self._claims[held.job_id]
            self.seen.pop(held.job_id, None)

    def on_cancel(self, job_id: str) -> None:
        """A cancellation request for ``job_id`` is recorded in the store (this process wrote it,
        or ``recorded`` read it)."""
        now = time.monotonic()
        with self._lock:
            self.seen[job_id] = now
            held = self._claims.get(job_id)
        pools = self._current()
        if held is not None and pools is not None:
            pools.canceller.deliver(job_id)

    def redeliver(self) -> bool:
        """Tell the runtime again about cancelled jobs it may have missed; True while any remain.

        A notification can arrive between claim() returning and the runtime registering the
        attempt; the runtime ignores repeats, so repeating for a short while closes that gap.
        """
        now = time.monotonic()
        seen = self.seen
        with self._lock:
            for job_id, at in list(seen.items()):
                if now - at > _CANCEL_MEMORY:
                    del seen[job_id]
            claims = self._claims
            due = [job_id for job_id, at in seen.items() if job_id in claims and at >= claims[job_id].claimed_at]
            remaining = bool(seen)
        pools = self._current()
        if pools is not None:
            for job_id in due:
                pools.canceller.deliver(job_id)
        return remaining

    def held_ids(self) -> list[int]:
        """The ids of the jobs this process holds."""
        with self._lock:
            return [int(job_id) for job_id in self._claims]

    def recorded(self, conn: Conn, ids: Iterable[int]) -> None:
        """Act on the cancellation requests stored for ``ids``.

        A notification is only a hint: anyone who can connect may send ``c:<id>`` on the
        channel, and clients of other schemas of the database (another ``search_path``) share
        it. Only a request that ``cancel_job`` recorded in this client's ``neoq_cancellations``
        cancels.
        """
        wanted = sorted(set(ids))
        if not wanted:
            return
        for (job_id,) in conn.execute(QUERIES["pending_cancels"], {"ids": wanted}).fetchall():
            self.on_cancel(str(job_id))
