"""Pauses and rate limits on Redis (docs/flow-control.md).

A pause is the queue's name in the namespace's ``paused`` set, which every fetch reads in its own
script (``pause.lua`` writes it and tells every client).

A look at a rate-limited queue leases a job as usual, then takes a start in its key's window
(``rate.lua``: the starts of the last ``per`` seconds, a sorted set per queue and key, counted
and taken in one script). With the window full the job goes back unstarted, its attempt
uncounted (``give_back``, without a wake-up): as it was when the limit has no key (the look then
answers when the window has room), else put off until its key's window has room (the look goes
on: another key's job may start). A rate-limited queue leases nothing ahead.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, cast

import redis

from ...waiting import Look
from ..base import Claim
from ..lease import LeaseToken
from ..lease.handback import take_back
from ..ratelook import rated_look as rated
from .scripts import wrap_error
from .settings import RedisSettings

if TYPE_CHECKING:
    from ...flow import RateLimit
    from ..lease import LeaseEngine
    from .scripts import Scripts
    from .store import RedisLeaseStore

__all__ = ["pause", "paused_queues", "rated_look"]

logger = logging.getLogger("neoq.backends.redis")


def pause(scripts: Scripts, queue: str, paused: bool) -> None:
    """Pause (or resume) ``queue`` for every client (pause.lua)."""
    doing = f"pausing queue {queue!r}" if paused else f"resuming queue {queue!r}"
    scripts.run("pause", ["1" if paused else "0", queue], doing)


def paused_queues(client: redis.Redis, settings: RedisSettings) -> set[str]:
    """The queues paused now."""
    try:
        return {str(name) for name in client.smembers(settings.key("paused"))}
    except redis.RedisError as exc:
        raise wrap_error(settings, exc, "reading the paused queues") from exc


def rated_look(
    engine: LeaseEngine, store: RedisLeaseStore, scripts: Scripts, queue: str, rate: RateLimit
) -> Look[Claim]:
    """``look`` for a rate-limited queue: a lease, then a start of its key's window."""
    per = int(rate.window * 1_000_000)

    def take_start(key: str) -> float:
        wait = int(scripts.run("rate", [queue, key, rate.count, per], f"taking a start of queue {queue!r}"))
        return wait / 1_000_000

    return rated(functools.partial(engine.look, queue), rate, take_start, functools.partial(_put_off, store))


def _put_off(store: RedisLeaseStore, claim: Claim, delay: float | None) -> None:
    """End ``claim`` unstarted, no attempt counted: its job due as before, or in ``delay`` seconds."""
    token = claim.token
    if not isinstance(token, LeaseToken):
        return
    lease = take_back(cast("LeaseEngine", token.engine), claim)  # the engine that made the claim
    if lease is None:
        return
    if delay is not None:
        lease.due_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
    store.give_back([lease], wake=False)
