"""Helpers for testing code that uses neoq, and the suites every backend passes.

- ``wait_for`` and ``neoq_threads``: for tests of applications (see docs/testing.md).
- ``BackendSuite``: the behaviour every backend shows through one client (``behaviour.py`` and
  the theme modules it combines).
- ``SharedStoreSuite``: what a store several processes share guarantees (``shared.py``), with
  worker processes started as ``python -m neoq.testing.worker``.

The suites are pytest test classes, so this package imports pytest: import it only from tests.
"""

from __future__ import annotations

from .behaviour import BackendSuite
from .helpers import neoq_threads, wait_for
from .shared import SharedStoreSuite

__all__ = ["BackendSuite", "SharedStoreSuite", "neoq_threads", "wait_for"]
