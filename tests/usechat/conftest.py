"""The `/api/chat` tests reuse the persistence fixtures: uvicorn, SQLite and PostgreSQL, the fake upstream."""

from __future__ import annotations

from tests.history.conftest import (  # noqa: F401 (fixtures, registered by being imported here)
    client,
    database_url,
    pg,
    serve,
    start_history,
    upstream,
)
