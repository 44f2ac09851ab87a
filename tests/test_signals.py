"""neoq.signals: the one SIGTERM/SIGINT policy, in this process (a second signal's exit: test_cli_worker.py)."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from neoq.signals import STOP_SIGNALS, StopSignals, wait_for_stop
from neoq.testing import wait_for

LOG = logging.getLogger("test.signals")


def _policy(stops: list[int], *, exit_on_second: bool = False) -> StopSignals:
    return StopSignals(lambda: stops.append(len(stops)), log=LOG, grace=7, exit_on_second=exit_on_second)


def test_first_signal_stops_gracefully_and_a_second_cuts_the_grace_short(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    stops: list[int] = []
    with _policy(stops):
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: len(stops) == 1, 5)
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(lambda: len(stops) == 2, 5)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"neoq: signal {signal.SIGTERM}: shutting down gracefully"),
        (logging.WARNING, f"neoq: second signal {signal.SIGINT}: stopping at once"),
    ]


def test_a_worker_process_announces_its_grace_time_and_how_to_exit(caplog: pytest.LogCaptureFixture) -> None:
    stops: list[int] = []
    with _policy(stops, exit_on_second=True):
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(lambda: stops == [0], 5)
    assert [r.getMessage() for r in caplog.records if r.name == LOG.name] == [
        f"neoq: signal {signal.SIGINT}: finishing running jobs (up to 7s); send it again to exit at once"
    ]


def test_the_replaced_handlers_come_back_even_after_an_error() -> None:
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    with pytest.raises(RuntimeError), _policy([]):
        assert all(signal.getsignal(signum) is not before[signum] for signum in STOP_SIGNALS)
        raise RuntimeError("boom")
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    seen: list[dict[int, object]] = []

    def embedded() -> None:
        with _policy([]):
            seen.append({signum: signal.getsignal(signum) for signum in STOP_SIGNALS})

    thread = threading.Thread(target=embedded)
    thread.start()
    thread.join(5)
    assert seen == [before]


def test_wait_for_stop_returns_once_the_event_is_set() -> None:
    stopped = threading.Event()
    timer = threading.Timer(0.05, stopped.set)
    timer.start()
    wait_for_stop(stopped)
    assert stopped.is_set()
    timer.join()
