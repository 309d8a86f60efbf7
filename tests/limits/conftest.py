"""The real Redis on this machine (127.0.0.1:6379), with a key prefix per test run so parallel runs never collide.

Under ``CI=true`` a Redis that does not answer fails the tests (``.ci/run`` starts one); elsewhere
they are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_PREFIX = f"agent-backend-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} does not answer under CI=true ({exc}); .ci/run should have started it")
        pytest.skip(f"Redis at {REDIS_URL} does not answer ({exc})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone (under the run's); its keys are deleted afterwards."""
    mine = f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}:"
    yield mine
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=mine + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
