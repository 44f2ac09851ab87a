"""The behaviour suite (neoq.testing.BackendSuite) on Redis: every behaviour the memory backend
shows, on leases, with a key prefix of each test's own (tests/redisfixtures.py)."""

from __future__ import annotations

import pytest

from neoq.backends.redis import RedisBackend
from neoq.testing import BackendSuite

pytestmark = pytest.mark.redis


class TestRedisSuite(BackendSuite):
    @pytest.fixture
    def backend(self, redis_url: str) -> RedisBackend:
        return RedisBackend(redis_url, lease=2, check_config=False)
