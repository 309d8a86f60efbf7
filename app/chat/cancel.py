"""Stopping a task's work from anywhere in the event loop, at the price of one ``task.cancel()``.

anyio's cancel scopes and task groups cost a measurable share of a short request (scope
bookkeeping, repeated cancellation delivery); the pipeline runs on asyncio only, so it uses
asyncio's own mechanism, the one ``asyncio.timeout`` is built on: cancel the task, and let the
block that asked for it swallow exactly that cancellation (``Task.uncancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

__all__ = ("LateWatch", "StopScope", "watch")


def watch(awaitable: Awaitable[object], then: Callable[[], None]) -> asyncio.Future[object]:
    """Await ``awaitable`` in a task of its own and call ``then`` when it ends (not when it is cancelled).

    A failure of ``awaitable`` counts as its end (a receive that raises means the client is gone).
    """
    watcher = asyncio.ensure_future(awaitable)

    def ended(done: asyncio.Future[object]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved, so asyncio does not report it as lost
            then()

    watcher.add_done_callback(ended)
    return watcher


class LateWatch:
    """:func:`watch` started only after ``delay`` seconds, so a request that is over by then costs no task.

    Used for noticing that a client left: the contract allows a second for it, and most short
    requests end long before the watch would have begun.
    """

    __slots__ = ("_handle", "_watcher")

    def __init__(self, delay: float, awaitable: Callable[[], Awaitable[object]], then: Callable[[], None]) -> None:
        self._watcher: asyncio.Future[object] | None = None

        def start() -> None:
            self._watcher = watch(awaitable(), then)

        self._handle = asyncio.get_running_loop().call_later(delay, start)

    def cancel(self) -> None:
        self._handle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class StopScope:
    """A ``with`` block that :meth:`cancel` can end from any other task or callback.

    Only the block is stopped: once it has exited, :meth:`cancel` does nothing, and a
    cancellation that came from elsewhere (the server stopping the task) passes through.
    """

    __slots__ = ("_cancelling", "_requested", "_task")

    def __init__(self) -> None:
        self._task: asyncio.Task[object] | None = None
        self._requested = False
        self._cancelling = 0

    def __enter__(self) -> StopScope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("StopScope needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._requested:
            task.cancel()
        return self

    def cancel(self) -> None:
        """Stop the block at its next ``await`` (or at once, if it has not started)."""
        if self._requested:
            return
        self._requested = True
        if self._task is not None:
            self._task.cancel()

    @property
    def cancel_called(self) -> bool:
        return self._requested

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        task, self._task = self._task, None
        if not self._requested or task is None:
            return False
        # Our cancel() was called while the block ran: take back that one cancellation; swallow
        # the CancelledError only if no other cancellation is pending.
        remaining = task.uncancel()
        return exc_type is asyncio.CancelledError and remaining <= self._cancelling
