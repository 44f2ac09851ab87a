"""The store's half of flow control (docs/flow-control.md): what ``Backend`` adds for it.

Each feature is a capability (``neoq.backends.capabilities``): a backend that declares it
overrides the methods below, and every process sharing the store sees the same state (a paused
queue is paused for all of them). A backend that does not declare one keeps the defaults here,
which refuse with a ``ConfigurationError`` naming the capability.

- ``"pause"``: ``pause_queue``, ``resume_queue``, ``paused_queues``. Once ``pause_queue``
  returns, no claim of the queue is made in any process (attempts already running finish) until
  ``resume_queue``, which wakes the queue's waiting claim loops everywhere. A look at a paused
  queue answers "nothing due, none scheduled", so its loops wait for that wake-up (or the poll
  interval), never in a loop.
- ``"priority"``: ``Job.priority`` orders the claims (``look``'s order: priority descending,
  ``run_after``, id); nothing to override here.
- ``"unique_for"``: ``enqueue`` refuses a job whose ``unique_for`` window holds an earlier
  enqueue of the same queue and fingerprint, whatever became of it.
- ``"snooze"``: ``settle`` with ``Outcome(NEW, snoozed=True)`` counts a snooze (``Job.snoozes``)
  and leaves ``retries`` as they are.
- ``"global_limit"``, ``"rate_limit"``: ``prepare_queue`` reads ``Handler.global_limit`` and
  ``Handler.rate_limit``, and ``look`` claims only within them, across every process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..handler import Handler

__all__ = ["FlowStore", "check_handler"]


class FlowStore:
    """The flow-control methods of ``Backend``, with the defaults of a store that has none of them."""

    def _lacks(self, capability: str, what: str) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} cannot {what}: it does not offer the {capability!r} capability "
            "(memory:// and postgresql:// do; see docs/flow-control.md)"
        )

    def pause_queue(self, queue: str) -> None:
        """Stop every process from claiming jobs of ``queue`` until ``resume_queue``; idempotent.

        When it returns, no claim of ``queue`` is under way or made (capability ``"pause"``).
        """
        raise self._lacks("pause", "pause queues")

    def resume_queue(self, queue: str) -> None:
        """Let ``queue`` be claimed again and wake its waiting claim loops, in every process; idempotent."""
        raise self._lacks("pause", "resume queues")

    def paused_queues(self) -> set[str]:
        """The queues paused now (capability ``"pause"``); the default: none."""
        return set()


def check_handler(capabilities: frozenset[str], backend: str, queue: str, handler: Handler) -> None:
    """Refuse, before ``queue`` starts, a ``Handler`` limit that a backend without its capability would ignore."""
    for capability, setting in (("global_limit", handler.global_limit), ("rate_limit", handler.rate_limit)):
        if setting is not None and capability not in capabilities:
            raise ConfigurationError(
                f"{backend} cannot honour {capability}= (queue {queue!r}): it does not offer the "
                f"{capability!r} capability"
            )
