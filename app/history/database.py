"""The conversation database: its advanced-alchemy configuration, its schema revision, and its health.

The schema comes from the Alembic migrations in ``app/history/migrations`` (``litestar database
upgrade`` applies them). In ``development`` and ``testing`` the service upgrades the database
itself when it starts; in ``production`` a database that is not at the current revision stops
start-up with one line naming the command to run. A database that does not answer at start-up
stops nothing: conversations answer 503 until it does, and the schema is checked (or upgraded)
on first use.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Final

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.errors import StorageUnavailable
from app.sections import DatabaseSettings
from providers.errors import AgentError

__all__ = (
    "MIGRATIONS",
    "TIMEOUT_SECONDS",
    "Database",
    "SchemaOutOfDate",
    "database_config",
    "display_url",
    "failed_storage",
    "reason",
    "unavailable",
)

logger = logging.getLogger("app.history")

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
#: The longest any one database operation may take before the service says the store is down.
TIMEOUT_SECONDS: Final = 5.0
_UPGRADE_LOCK: Final = 0x61676233  # a PostgreSQL advisory lock: one process upgrades at a time
_UPGRADE_COMMAND: Final = "litestar database upgrade"


def failed_storage(exc: Exception) -> bool:
    """The database did not answer (refused, timed out, dropped the link, refused connections…), as opposed to a bug.

    Drivers raise many kinds for that (asyncpg raises some of its own past SQLAlchemy on connect),
    so anything but a bug's errors counts; SQLAlchemy's own errors are bugs, except its pool's
    time-out and what it wraps from the driver.
    """
    if isinstance(exc, DBAPIError):
        return not isinstance(exc, (IntegrityError, ProgrammingError))
    if isinstance(exc, PoolTimeout):
        return True
    return not isinstance(exc, (SQLAlchemyError, AgentError, SchemaOutOfDate))


class SchemaOutOfDate(Exception):
    """The database is not at the current schema revision (and the service may not upgrade it)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers do not block the writer (a list while answers checkpoint); NORMAL is durable
    # across a crash of the process; foreign keys make deleting a conversation delete its messages.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def database_config(settings: DatabaseSettings) -> SQLAlchemyAsyncConfig:
    """The advanced-alchemy configuration for ``settings`` (no I/O: the engine connects on first use)."""
    if settings.url.startswith("postgresql"):
        connect_args: dict[str, Any] = {
            "timeout": TIMEOUT_SECONDS,
            "command_timeout": TIMEOUT_SECONDS,
            # A commit does not wait for its WAL flush: a crash of PostgreSQL itself (not of the
            # service) may lose the last few hundred milliseconds of writes — less than one
            # checkpoint period, which is what an answer may lose anyway — and every write is
            # that much faster. Consistency is untouched (PostgreSQL's "asynchronous commit").
            "server_settings": {"synchronous_commit": "off"},
        }
    else:
        connect_args = {"timeout": TIMEOUT_SECONDS}
    return SQLAlchemyAsyncConfig(
        connection_string=settings.url,
        create_engine_callable=_create_engine,
        engine_config=EngineConfig(connect_args=connect_args, pool_timeout=int(TIMEOUT_SECONDS)),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS), script_config=str(MIGRATIONS / "alembic.ini")
        ),
        # Errors are ours to render (problem+json), and updated_at means what the contract says.
        set_default_exception_handler=False,
        enable_touch_updated_timestamp_listener=False,
    )


def display_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse: show only its scheme
        return url.split(":", 1)[0] + "://…"


def unavailable(exc: BaseException) -> StorageUnavailable:
    """The 503 for a database that did not answer; says why without repeating the URL (it may hold a password)."""
    return StorageUnavailable(
        f"conversation storage is unavailable: the database does not answer ({reason(exc)}); try again,"
        ' or send "store": false to chat without history'
    )


def reason(exc: BaseException) -> str:
    """Why the database did not answer, in a few words (never its URL or credentials)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    seen = cause.__cause__ or cause
    if isinstance(seen, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return type(seen).__name__


class Database:
    """The engine, and whether its schema has been seen at the current revision."""

    __slots__ = ("_lock", "_ready", "config", "engine", "upgrade")

    def __init__(self, config: SQLAlchemyAsyncConfig, *, upgrade: bool) -> None:
        self.config = config
        self.engine = config.get_engine()
        self.upgrade = upgrade
        """Bring the schema to the current revision (development, testing) rather than only check it."""
        self._ready = False
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self._ready

    async def ensure(self) -> None:
        """Upgrade (or check) the schema once; cheap after it has worked.

        Raises:
            SchemaOutOfDate: the database is behind and the service may not upgrade it.
            StorageUnavailable: the database does not answer.
        """
        try:
            await self._ensure()
        except Exception as exc:
            if not failed_storage(exc):
                raise
            raise unavailable(exc) from None

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if self.ready:  # another caller finished it while this one waited
                return
            async with asyncio.timeout(TIMEOUT_SECONDS * 4):  # a first upgrade may take a while
                async with self.engine.begin() as connection:
                    await connection.run_sync(self._migrate)
            self._ready = True

    def _migrate(self, connection: Connection) -> None:
        commands = AlembicCommands(sqlalchemy_config=self.config)
        commands.config.attributes["connection"] = connection
        if not self.upgrade:
            current = set(MigrationContext.configure(connection, opts=_context_opts(self.config)).get_current_heads())
            heads = set(ScriptDirectory.from_config(commands.config).get_heads())
            if current != heads:
                shown = ", ".join(sorted(current)) or "empty"
                raise SchemaOutOfDate(
                    f"the conversation database is not at the current schema revision ({shown}, current:"
                    f" {', '.join(sorted(heads))}): run `{_UPGRADE_COMMAND}`"
                    " (or set database.enabled = false)"
                )
            return
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        command.upgrade(commands.config, "head")

    async def check(self) -> str:
        """For ``/ready``: ``"ok"`` when the database answers a query (at the current schema), else a short reason."""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self._ensure()
                async with self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except SchemaOutOfDate:
            return f"schema not at the current revision (run `{_UPGRADE_COMMAND}`)"
        except Exception as exc:
            if not failed_storage(exc):
                logger.exception("the database check failed")
            return reason(exc)
        return "ok"


def _context_opts(config: SQLAlchemyAsyncConfig) -> dict[str, Any]:
    return {"version_table": config.alembic_config.version_table_name}
