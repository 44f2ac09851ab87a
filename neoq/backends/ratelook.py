"""The look of a rate-limited queue (``Handler.rate_limit``), the same for every store that has one.

A store's look claims a job, then takes a start of the job's window (``take_start``: the store's own
atomic step). With the window full the claim goes back unstarted, its attempt uncounted
(``put_off``): when the limit has no key, due as before, and the look answers when the window has
room; with a key, put off until that key's window has room, and the look goes on (another key's job
may start now).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..waiting import Look

if TYPE_CHECKING:
    from ..flow import RateLimit
    from .base import Claim

__all__ = ["rated_look"]

logger = logging.getLogger(__name__)


def rated_look(
    look: Callable[[], Look[Claim]],
    rate: RateLimit,
    take_start: Callable[[str], float],
    put_off: Callable[[Claim, float | None], None],
) -> Look[Claim]:
    """``look()`` within ``rate``: ``take_start(key)`` returns 0 once a start is taken, else the
    seconds until the key's window has room; ``put_off(claim, delay)`` ends a claim unstarted (due
    as before with ``None``, else in ``delay`` seconds)."""
    while True:
        found = look()
        claim = found.claim
        if claim is None:
            return found
        try:
            key = rate.key_of(claim.job)
        except Exception:
            logger.exception("neoq: the rate limit's key raised for job %s; counted under ''", claim.job.id)
            key = ""
        try:
            wait = take_start(key)
        except BaseException:
            put_off(claim, None)
            raise
        if wait <= 0:
            return found
        put_off(claim, None if rate.key is None else wait)
        if rate.key is None:
            return Look(due_in=wait)
