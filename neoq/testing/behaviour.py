"""The backend behaviour suite: ``BackendSuite``.

Every backend, built-in or yours, must pass ``BackendSuite``. Subclass it in a test module
and give it a ``backend`` fixture that returns a new, unopened backend over an empty store::

    import pytest
    from neoq.testing import BackendSuite

    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def backend(self):
            return MyBackend(...)

It needs pytest (it is a pytest test class). The suite drives the backend through a real
``neoq.Neoq`` client, so it checks the backend together with the shared runtime, the way
applications use it. Its tests live in one class per theme, in the modules next to this one.
"""

from __future__ import annotations

from .flow import FlowTests
from .hardening import HardeningTests
from .managing import ManagingTests
from .outcomes import OutcomesTests
from .running import RunningTests
from .store import StoreTests
from .storing import StoringTests

__all__ = ["BackendSuite"]


# pytest collects a base class's tests before those of the bases listed ahead of it: the themes are
# listed last first, so they run in the order of the list's reverse (storing first, flow control last).
class BackendSuite(FlowTests, OutcomesTests, StoreTests, ManagingTests, HardeningTests, RunningTests, StoringTests):
    """The behaviour every backend must show. Subclass it and provide a ``backend`` fixture."""
