"""The `/api/chat` tests reuse the persistence fixtures (uvicorn, SQLite, PostgreSQL, the fake upstream) and Redis's."""

from __future__ import annotations

from tests.history.conftest import (  # noqa: F401 (fixtures, registered by being imported here)
    client,
    database_url,
    pg,
    serve,
    start_history,
    upstream,
)
from tests.limits.conftest import prefix, redis_url  # noqa: F401 (fixtures, as above)
