"""The client's flow-control verbs (docs/flow-control.md): ``Neoq.pause_queue`` and its kin.

A mixin of ``Neoq``: each verb checks its argument, then asks the backend, which must declare the
matching capability (``neoq.backends.capabilities``) or refuses with a ``ConfigurationError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends.capabilities import PAUSE
from .errors import ConfigurationError, InvalidJobError
from .job import validate_queue_name

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["QueueControl"]

#: The counts of a queue that ``stats`` lists only because it is paused.
_NO_JOBS = ("new", "running", "processed", "failed", "cancelled")


def _queue(queue: object) -> str:
    try:
        return validate_queue_name(queue)
    except InvalidJobError as exc:
        raise ConfigurationError(str(exc)) from None


class QueueControl:
    """``pause_queue``, ``resume_queue``, ``paused_queues``, and the paused queues in ``stats``."""

    backend: Backend

    def _check_open(self) -> None:  # pragma: no cover - Neoq's
        raise NotImplementedError

    def pause_queue(self, queue: str) -> None:
        """Stop ``queue``: once this returns, no process sharing the store starts a job of it.

        Attempts already running finish; waiting jobs stay waiting (and may be cancelled). Lasts
        until ``resume_queue`` (it survives restarts: the store keeps it). Pausing a paused queue
        changes nothing. Needs the backend's ``"pause"`` capability (else ``ConfigurationError``).
        """
        self._check_open()
        self.backend.pause_queue(_queue(queue))

    def resume_queue(self, queue: str) -> None:
        """Let every process start jobs of ``queue`` again, at once; resuming a running queue changes nothing."""
        self._check_open()
        self.backend.resume_queue(_queue(queue))

    def paused_queues(self) -> set[str]:
        """The names of the queues paused now, by any process sharing the store."""
        self._check_open()
        return set(self.backend.paused_queues())

    def _with_paused(self, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """``stats`` with ``"paused": 1`` added to each paused queue's counts (listed even without jobs)."""
        if PAUSE in self.backend.capabilities:
            for queue in self.backend.paused_queues():
                counts.setdefault(queue, dict.fromkeys(_NO_JOBS, 0))["paused"] = 1
        return counts
