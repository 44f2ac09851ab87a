"""Handler settings and retry policies."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import neoq
from neoq import ConfigurationError, Handler, Job


def noop(job: Job) -> None:
    pass


def test_handler_defaults() -> None:
    handler = Handler(noop)
    assert handler.concurrency == neoq.DEFAULT_CONCURRENCY
    assert handler.timeout == neoq.DEFAULT_TIMEOUT == 30.0
    assert handler.max_retries is None
    assert handler.backoff is neoq.default_backoff
    assert handler.max_retries_for(Job(queue="q")) == neoq.DEFAULT_MAX_RETRIES == 25
    assert Handler(noop, max_retries=2).max_retries_for(Job(queue="q")) == 2
    assert Handler(noop, max_retries=2).max_retries_for(Job(queue="q", max_retries=0)) == 0
    assert Handler(noop, timeout=timedelta(milliseconds=250)).timeout == 0.25
    assert Handler(noop, timeout=None).timeout is None
    assert "noop" in repr(Handler(noop))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"timeout": -1},
        {"timeout": "5"},
        {"max_retries": -1},
        {"backoff": 5},
    ],
)
def test_invalid_handler_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Handler(noop, **kwargs)  # type: ignore[arg-type]


def test_non_callable_handler() -> None:
    with pytest.raises(ConfigurationError, match="callable"):
        Handler("not callable")  # type: ignore[arg-type]


def test_default_backoff_formula() -> None:
    random.seed(1)
    for retries in range(1, 8):
        delay = neoq.default_backoff(retries)
        low = retries**4 + 15
        assert low <= delay <= low + 30 * retries


def test_default_backoff_jitter_spreads_over_0_to_30_seconds_per_retry() -> None:
    # The jitter is what keeps jobs that failed together from retrying together: over many
    # samples it must cover 0..30*retries seconds evenly, not just stay within the bounds.
    rng_state = random.getstate()
    random.seed(20240515)
    try:
        for retries in (1, 2, 5, 10):
            span = 30.0 * retries
            jitters = [neoq.default_backoff(retries) - (retries**4 + 15) for _ in range(2000)]
            assert all(0.0 <= jitter <= span for jitter in jitters)
            assert min(jitters) < 0.02 * span and max(jitters) > 0.98 * span, retries
            # Each tenth of the span holds about a tenth of the samples (200 expected each).
            deciles = [0] * 10
            for jitter in jitters:
                deciles[min(9, int(jitter / span * 10))] += 1
            assert all(140 <= count <= 260 for count in deciles), (retries, deciles)
    finally:
        random.setstate(rng_state)


def test_exponential_backoff() -> None:
    exact = neoq.exponential_backoff(base=1.0, factor=2.0, max=10.0, jitter=False)
    assert [exact(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert exact(10_000) == 10.0  # no overflow
    jittered = neoq.exponential_backoff(base=2.0, factor=3.0, max=100.0)
    for retries in range(1, 6):
        full = min(100.0, 2.0 * 3.0 ** (retries - 1))
        for _ in range(20):
            assert full / 2 <= jittered(retries) <= full
    with pytest.raises(ConfigurationError):
        neoq.exponential_backoff(base=-1)


def test_retry_delay_accepts_timedelta_and_clamps() -> None:
    assert Handler(noop, backoff=lambda n: timedelta(seconds=n)).retry_delay(3) == 3.0
    assert Handler(noop, backoff=lambda n: -5).retry_delay(1) == 0.0


def test_timeouts_and_backoff_delays_stop_at_100_years() -> None:
    from neoq.defaults import MAX_DURATION

    assert MAX_DURATION == 100 * 365.25 * 86400
    assert Handler(noop, timeout=MAX_DURATION).timeout == MAX_DURATION
    for too_long in (MAX_DURATION + 1, timedelta(days=400 * 365), 1e300):
        with pytest.raises(ConfigurationError, match="at most 100 years"):
            Handler(noop, timeout=too_long)
    # Above 100 years a delay is clamped; it overflowed the retry's datetime (1e12 s) or float() (10**400).
    for huge in (1e12, 10**400, timedelta.max):
        assert Handler(noop, backoff=lambda n, huge=huge: huge).retry_delay(1) == MAX_DURATION
    assert Handler(noop, backoff=lambda n: -(10**400)).retry_delay(1) == 0.0
    for garbage in (float("nan"), float("inf"), "soon", None):
        with pytest.raises(TypeError, match="backoff result"):
            Handler(noop, backoff=lambda n, garbage=garbage: garbage).retry_delay(1)
