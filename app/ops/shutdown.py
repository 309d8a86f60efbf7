"""Graceful shutdown: on SIGTERM/SIGINT, a grace period for open streams, then each ends with ``server_shutdown``.

ASGI tells an app about shutdown only after the server has waited for every open request, so the
service watches the signal itself: it wraps the server's own handler (uvicorn's, which stops
accepting connections and closes idle ones) and, before handing the signal on, marks the service
as stopping (``/ready`` answers 503) and starts the grace timer. When ``shutdown_grace_seconds``
have passed, every answer still open is stopped: its stream ends with the retryable
``server_shutdown`` error line and its stored message is ``interrupted``; the server then
finishes its own shutdown. uvicorn closes WebSockets (code 1012) as soon as shutdown begins, so
their chats are stopped at once, with the same error frame first.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Final

from app.chat import ChatPipeline

__all__ = ("Shutdown",)

logger = logging.getLogger("app.shutdown")

_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """The service's side of a server shutdown; :meth:`install` in the lifespan, :meth:`uninstall` after."""

    __slots__ = ("_grace", "_loop", "_on_begin", "_pipeline", "_previous", "_timer", "stopping")

    def __init__(self, pipeline: ChatPipeline, grace_seconds: float) -> None:
        self._pipeline = pipeline
        self._grace = grace_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], object]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._on_begin: list[Callable[[], None]] = []
        self.stopping = False
        """The shutdown has begun: ``/ready`` answers 503."""

    def on_begin(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) when the shutdown begins."""
        self._on_begin.append(callback)

    def install(self) -> None:
        """Wrap the server's signal handlers; does nothing where the server installed none (tests)."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only: a server elsewhere (a test client) has none
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous) and previous is not signal.default_int_handler:
                self._previous[sig] = previous
                signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping and self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin)
        self._previous[signum](signum, frame)

    def begin(self) -> None:
        """Start the grace period (the signal handler calls it; tests may too)."""
        if self.stopping:
            return
        self.stopping = True
        logger.info(
            "shutting down: %d answer(s) open, %g s to finish",
            self._pipeline.live,
            self._grace,
            extra={"fields": {"open": self._pipeline.live, "grace_seconds": self._grace}},
        )
        for callback in self._on_begin:
            callback()
        self._timer = asyncio.get_running_loop().call_later(self._grace, self._end_grace)

    def _end_grace(self) -> None:
        if self._pipeline.live:
            logger.warning("grace period over: stopping %d open answer(s)", self._pipeline.live)
        self._pipeline.stop_all("shutdown")
