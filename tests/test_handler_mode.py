"""Handler(mode=...) and Backend.prepare_queue: a mode a backend cannot serve fails at start."""

from __future__ import annotations

import pytest

import neoq
from neoq import ConfigurationError, Handler


def test_mode_defaults_to_the_backends_and_is_validated() -> None:
    assert Handler(lambda job: None).mode is None
    assert Handler(lambda job: None, mode="lease").mode == "lease"
    assert Handler(lambda job: None, mode="transaction").mode == "transaction"
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        Handler(lambda job: None, mode="leased")


def test_memory_backend_refuses_lease_mode_at_start_and_forgets_the_handler() -> None:
    with neoq.new() as nq:
        with pytest.raises(ConfigurationError, match="MemoryBackend does not support mode='lease'"):
            nq.start("q", Handler(lambda job: None, mode="lease"))
        # Nothing was left registered: the queue can still be started in the default mode.
        nq.start("q", Handler(lambda job: None, mode="transaction"))


def test_drain_refuses_lease_mode_on_memory() -> None:
    with neoq.new() as nq:
        nq.handler("q", mode="lease")(lambda job: None)
        with pytest.raises(ConfigurationError, match="lease"):
            nq.drain(1)
