"""Conversation history (CONTRACT §6): stored conversations, the chat feature that fills them, their routes.

SQLAlchemy 2 async through advanced-alchemy: its Litestar plugin owns the engine's lifetime and
adds ``litestar database …`` (Alembic, with the migrations in ``migrations/``); this package adds
the feature (:mod:`.feature`), the store (:mod:`.store`) and ``/conversations`` (:mod:`.routes`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from advanced_alchemy.extensions.litestar import SQLAlchemyInitPlugin
from litestar import Litestar

from app.chat.hooks import ChatFeature
from app.config import Settings
from app.errors import StorageUnavailable
from app.history.database import Database, SchemaOutOfDate, database_config, display_url
from app.history.feature import HistoryFeature, HistoryOff
from app.history.routes import ConversationController
from app.history.store import HistoryStore
from app.startup import refuse_startup

__all__ = ("ConversationController", "HistoryFeature", "database_plugin", "open_history")

logger = logging.getLogger("app.history")


def database_plugin(settings: Settings) -> SQLAlchemyInitPlugin | None:
    """advanced-alchemy's plugin for the configured database, or ``None`` when persistence is off (no I/O)."""
    if not settings.database.enabled:
        return None
    return SQLAlchemyInitPlugin(config=database_config(settings.database))


@asynccontextmanager
async def open_history(app: Litestar, settings: Settings) -> AsyncIterator[ChatFeature]:
    """The history feature for the app's lifetime; the schema is upgraded (or checked, in production) first.

    ``app.state.history`` is the store the routes use (``None`` when persistence is off), and
    ``await app.state.history_feature.check()`` is the database's readiness for ``/ready``:
    ``"ok"``, ``"disabled"`` or a short reason.
    """
    plugin: SQLAlchemyInitPlugin | None = app.state.get("database")
    if plugin is None:
        app.state.history = None
        app.state.history_feature = off = HistoryOff()
        yield off
        return
    config = plugin.config[0]
    database = Database(config, upgrade=settings.env != "production")  # type: ignore[arg-type]
    where = display_url(settings.database.url)
    try:
        await database.ensure()
    except SchemaOutOfDate as exc:
        refuse_startup(f"agent-backend: database error: {exc} [database.url: {where}]")
    except StorageUnavailable as exc:
        logger.warning("%s [database.url: %s]; conversations answer 503 until it does", exc.message, where)
    store = HistoryStore(database, settings.history)
    feature = HistoryFeature(store)
    app.state.history = store
    app.state.history_feature = feature
    yield feature
