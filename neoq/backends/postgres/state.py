"""The per-queue wake-up state that the backend's claims and the lease engine wait on."""

from __future__ import annotations

import threading


class _QueueState:
    """Waiting claims of one queue: woken by the listener, by wakeup() and by local enqueues."""

    __slots__ = (
        "cond",
        "generation",
        "local",
        "local_at",
        "looked_at",
        "polling_held",
        "signalled_at",
        "timer_held",
        "waiting",
        "wakeups",
    )

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        #: Enqueues of this process whose own notification is still to come (they signal the
        #: queue themselves, so the listener lets that many notifications go), and when the
        #: last began: after _LOCAL_NOTIFY_MEMORY the count is forgotten.
        self.local = 0
        self.local_at = 0.0
        #: Bumped on every signal, so a claim that was probing when it came probes again.
        self.generation = 0
        #: wakeup() requests not yet consumed by a waiting claim.
        self.wakeups = 0
        self.waiting = 0
        #: One waiting claim per queue and process looks often while others hold due jobs.
        self.polling_held = False
        #: One waiting claim per queue and process looks every poll interval (claim()).
        self.timer_held = False
        #: When a claim of this process last looked at the queue (time.monotonic()).
        self.looked_at = 0.0
        #: When the queue was last signalled (a notification or a local enqueue): a look that
        #: began after it saw what the signal was about.
        self.signalled_at = 0.0
