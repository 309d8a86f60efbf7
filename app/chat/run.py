"""The chat pipeline: one owner for an answer's lifetime, whatever transport carries it.

1. **plan** (:meth:`ChatPipeline.plan`): the validated request, who asks, what goes upstream,
   and the providers to try, in order (a bare model id may wait for the providers' model
   lists, :mod:`app.chat.routing`).
2. **open** (:meth:`ChatPipeline.open`): every feature admits the chat (or refuses it); the first
   provider that answers is opened — the next one is tried only when one fails with
   ``upstream_unavailable`` or ``upstream_timeout`` before its stream starts; a client that
   leaves meanwhile abandons it (the upstream request is closed).
3. **pump** (:meth:`ChatRun.pump`): the ``meta`` event, each batch as the upstream produced it,
   then exactly one terminal event — a provider's exception becomes an ``error`` event, a
   stream that ends without a terminal gets one, and :meth:`ChatRun.stop` ends it with
   ``done``/``cancelled`` or ``error``/``server_shutdown``.
4. **end**: the upstream is closed exactly once, shielded from cancellation, and every
   observer's ``finishing`` and ``released`` run exactly once, on every outcome.

Transports (NDJSON, WebSocket, the AI SDK's stream) only encode what ``pump`` hands their
``send`` and tell the run when their client leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from app.chat.cancel import LateWatch, StopScope
from app.chat.hooks import ChatFeature, ChatObserver, Outcome
from app.chat.request import ChatRequest, ExternalChat, params_of, parse_chat_request
from app.chat.routing import Attempt, route
from app.config import Limits
from app.errors import ServerShutdown
from app.models import ModelCatalog
from app.principal import Principal
from providers.base import ChatParams, EventStream
from providers.errors import AgentError, UpstreamTimeout, UpstreamUnavailable
from providers.events import ChatEvent, DoneEvent, ErrorEvent, Meta, MetaEvent, error_event
from providers.registry import ProviderRegistry

__all__ = ("WATCH_AFTER_SECONDS", "Chat", "ChatPipeline", "ChatPlan", "ChatRun", "Send", "StopReason", "WaitGone")

logger = logging.getLogger("app.chat")

#: Hands one batch of events to the transport. It must not raise when the client has gone
#: (the transport tells the run instead, with :meth:`ChatRun.stop`).
Send = Callable[[Sequence[ChatEvent]], Awaitable[None]]
#: Returns when the client has gone (closed the connection, sent a cancel).
WaitGone = Callable[[], Awaitable[object]]
StopReason = Literal["cancelled", "shutdown", "client_gone"]

_TERMINAL: Final = (DoneEvent, ErrorEvent)
_FALLBACK_ON: Final = (UpstreamUnavailable, UpstreamTimeout)
_LAST_WORD_SECONDS: Final = 5.0
#: How soon a departed client is looked for; the contract allows a second to close the upstream.
WATCH_AFTER_SECONDS: Final = 0.05  # a stopped answer's terminal line may take this long to go out
_CLIENT_GONE: Final = Outcome("client_gone")


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """One chat request, resolved: ready to open."""

    request: ChatRequest
    params: ChatParams
    attempts: tuple[Attempt, ...]
    principal: Principal
    client: str
    """The client's address (for limits that count per address)."""
    external: ExternalChat | None = None
    """The stored conversation the client names by its own id (``POST /api/chat``), if any."""


class Chat:
    """One answer as features see it: the plan, then who answered and when."""

    __slots__ = ("admitted_at", "detach_on_disconnect", "meta", "opened_at", "params", "plan")

    def __init__(self, plan: ChatPlan) -> None:
        self.plan = plan
        self.params = plan.params
        """What goes upstream; a feature's ``admit`` may replace it (history puts stored turns first)."""
        self.meta: Meta | None = None
        """``meta`` once the upstream said yes; observers' ``started`` may add keys."""
        self.admitted_at = time.monotonic()
        self.opened_at: float | None = None
        """When the upstream's headers came in."""
        self.detach_on_disconnect = False
        """Set by a feature (resume): when the client leaves, the answer runs on to its end unsent."""

    @property
    def principal(self) -> Principal:
        return self.plan.principal


class ChatPipeline:
    """Plans, opens and tracks every chat; one per app, shared by every transport."""

    __slots__ = ("_features", "_live", "catalog", "limits", "registry")

    def __init__(
        self,
        registry: ProviderRegistry,
        limits: Limits,
        features: Sequence[ChatFeature] = (),
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.catalog = catalog if catalog is not None else ModelCatalog(registry)
        """The providers' model lists, which route bare model ids."""
        self._features = tuple(features)
        self._live: set[ChatRun] = set()

    async def plan(self, data: object, principal: Principal, client: str) -> ChatPlan:
        """Validate a decoded request body and resolve who answers it.

        Raises:
            AgentError: the body is not a valid chat request, or its ``model`` cannot be routed.
        """
        return await self.plan_request(parse_chat_request(data, self.limits), principal, client)

    async def plan_request(
        self, request: ChatRequest, principal: Principal, client: str, external: ExternalChat | None = None
    ) -> ChatPlan:
        """Resolve an already validated request: the provider that answers, then its fallbacks.

        Raises:
            AgentError: its ``model`` names a provider but no model, or a bare id more than one
                provider lists when the default provider is not one of them.
        """
        attempts = await route(request.model, self.registry, self.catalog)
        return ChatPlan(request, params_of(request), attempts, principal, client, external)

    @property
    def live(self) -> int:
        """Answers open right now."""
        return len(self._live)

    def stop_conversation(self, owner: str, conversation_id: str) -> ChatRun | None:
        """Stop ``owner``'s answer streaming on ``conversation_id`` in this process (``/stop``); it, or ``None``."""
        for run in self._live:
            meta = run.chat.meta
            if meta is not None and meta.conversation_id == conversation_id and run.chat.principal.name == owner:
                run.stop("cancelled")
                return run
        return None

    def stop_all(self, reason: Literal["cancelled", "shutdown"]) -> None:
        """Stop every open answer (server shutdown)."""
        for run in list(self._live):
            run.stop(reason)

    async def open(self, plan: ChatPlan, *, until_gone: WaitGone | None = None) -> ChatRun | None:
        """Admit the chat and open its upstream; ``None`` if the client left before it answered.

        Raises:
            AgentError: a feature refused the chat, or no provider could start the answer.
        """
        chat = Chat(plan)
        observers: list[ChatObserver] = []
        try:
            for feature in self._features:
                observer = await feature.admit(chat)
                if observer is not None:
                    observers.append(observer)
            events = await self._open_unless_gone(chat, until_gone)
        except AgentError as exc:
            await _conclude(observers, chat, Outcome("refused", error=error_event(exc).error))
            raise
        except BaseException:
            await _conclude(observers, chat, _CLIENT_GONE)
            raise
        if events is None:
            await _conclude(observers, chat, _CLIENT_GONE)
            return None
        chat.opened_at = time.monotonic()
        chat.meta = events.meta
        for observer in observers:
            try:
                await observer.started(chat)
            except Exception:
                logger.exception("a chat observer failed at the start of an answer")
        run = ChatRun(chat, events, observers, self._live)
        self._live.add(run)
        return run

    async def _open_unless_gone(self, chat: Chat, until_gone: WaitGone | None) -> EventStream | None:
        # Some servers send no headers until the prompt is processed, which can take long; a
        # client that gives up meanwhile must not leave the LLM working for nobody.
        if until_gone is None:
            return await self._open_first(chat)
        scope = StopScope()
        watcher = LateWatch(WATCH_AFTER_SECONDS, until_gone, scope.cancel)
        with scope:
            try:
                return await self._open_first(chat)
            finally:
                watcher.cancel()
        return None  # the client left: the scope took back its own cancellation

    async def _open_first(self, chat: Chat) -> EventStream:
        plan = chat.plan
        last = len(plan.attempts) - 1
        for number, attempt in enumerate(plan.attempts):
            params = chat.params
            if attempt.model != params.model:
                params = msgspec.structs.replace(params, model=attempt.model)
            try:
                return await attempt.provider.open(params)
            except _FALLBACK_ON as exc:
                if number == last:
                    raise
                logger.warning(
                    "provider %r failed before the stream (%s); trying the next", attempt.provider.name, exc.code
                )
        raise AssertionError("a plan has at least one attempt")


class ChatRun:
    """One open answer: pump it to a transport once; stop it from anywhere."""

    __slots__ = (
        "_closed",
        "_ended",
        "_events",
        "_live",
        "_observers",
        "_outcome",
        "_pumped",
        "_scope",
        "_stop",
        "chat",
    )

    def __init__(self, chat: Chat, events: EventStream, observers: list[ChatObserver], live: set[ChatRun]) -> None:
        self.chat = chat
        self._events = events
        self._observers = observers
        self._live = live
        self._scope = StopScope()
        self._stop: StopReason | None = None
        self._outcome: Outcome | None = None
        self._pumped = False
        self._closed = False
        self._ended: asyncio.Event | None = None

    @property
    def outcome(self) -> Outcome | None:
        """How the answer ended, once it has."""
        return self._outcome

    async def wait_ended(self) -> None:
        """Return once the answer has ended and every observer has released it (its final write is done)."""
        if self._ended is None:
            self._ended = asyncio.Event()
        if self not in self._live and self._outcome is not None:
            return
        await self._ended.wait()

    def stop(self, reason: StopReason) -> None:
        """End the answer early: ``cancelled`` and ``shutdown`` still send a terminal event, ``client_gone`` nothing."""
        if self._stop is None and self._outcome is None:
            self._stop = reason
            self._scope.cancel()

    async def pump(self, send: Send) -> Outcome:
        """Send ``meta``, every batch, then one terminal event; end the answer whatever happens.

        Returns:
            How the answer ended.
        """
        if self._pumped:
            raise RuntimeError("an answer is pumped once")
        self._pumped = True
        try:
            last: Sequence[ChatEvent] | None = None
            with self._scope:
                meta = self.chat.meta
                assert meta is not None
                await send((MetaEvent(meta),))
                last = await self._relay(send)
            # Past the scope, stop() can no longer cut the final write short.
            if last is not None:
                await self._finish(last, send)
            else:
                await self._stopped(send)
        except Exception:
            logger.exception("a transport failed while sending an answer")
        finally:
            # asyncio delivers a cancellation once: these awaits run to their end even when the
            # task was cancelled from outside, and stop() can no longer reach past the scope.
            await self._end(self._outcome or _CLIENT_GONE)
        return self._outcome or _CLIENT_GONE

    async def abandon(self) -> None:
        """End an answer that will never be pumped (its client left first); a no-op after :meth:`pump`."""
        if not self._pumped:
            self._pumped = True
            await self._end(_CLIENT_GONE)

    async def _relay(self, send: Send) -> Sequence[ChatEvent]:
        """Send every batch but the last; return the last, which ends with the terminal event."""
        observers = self._observers
        try:
            async for batch in self._events:
                if not batch:
                    continue
                if isinstance(batch[-1], _TERMINAL):
                    return batch
                await send(batch)
                for observer in observers:
                    observer.batch(batch)
            logger.error("a provider's stream ended without a done or error event")
            terminal: ChatEvent = error_event(AgentError("the answer ended unexpectedly; try again"))
        except AgentError as exc:  # a provider may raise a contract error instead of yielding it
            terminal = error_event(exc)
        except Exception:
            logger.exception("the answer stream failed")
            terminal = error_event(AgentError("internal error while streaming; try again"))
        return (terminal,)

    async def _finish(self, batch: Sequence[ChatEvent], send: Send) -> None:
        """The upstream's answer ended with ``batch``: record it (observers' final writes), then send it."""
        terminal = batch[-1]
        if isinstance(terminal, DoneEvent):
            outcome = Outcome("complete", finish_reason=terminal.finish_reason)
        else:
            assert isinstance(terminal, ErrorEvent)
            outcome = Outcome("error", error=terminal.error)
        self._outcome = outcome  # from here on stop() does nothing
        for observer in self._observers:
            observer.batch(batch)
        await _finishing(self._observers, self.chat, outcome)
        await send(batch)
        # The upstream is closed after the last line went out: a clean end drains its body first.

    async def _stopped(self, send: Send) -> None:
        """Stopped before the upstream's answer ended: close it, record it, and say so (unless the client left)."""
        reason = self._stop or "client_gone"
        last: ChatEvent
        if reason == "cancelled":
            outcome, last = Outcome("cancelled", finish_reason="cancelled"), DoneEvent(True, "cancelled")
        elif reason == "shutdown":
            error = error_event(ServerShutdown("the service is shutting down; try again in a moment"))
            outcome, last = Outcome("shutdown", error=error.error), error
        else:
            return  # nothing more goes out; the end is recorded in _end
        self._outcome = outcome
        await self._close()
        await _finishing(self._observers, self.chat, outcome)
        try:
            async with asyncio.timeout(_LAST_WORD_SECONDS):
                await send((last,))
        except TimeoutError:
            logger.warning("the last line of a stopped answer could not be sent within %g s", _LAST_WORD_SECONDS)

    async def _close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._events.aclose()
            except Exception:
                logger.exception("closing an upstream answer failed")

    async def _end(self, outcome: Outcome) -> None:
        if self._outcome is None:  # the client left, or the task was cancelled from outside
            self._outcome = outcome
            await self._close()
            await _finishing(self._observers, self.chat, outcome)
        await self._close()
        self._live.discard(self)
        await _released(self._observers, self.chat, self._outcome)
        if self._ended is not None:
            self._ended.set()


async def _conclude(observers: Sequence[ChatObserver], chat: Chat, outcome: Outcome) -> None:
    """End a chat that never became a run (refused, or its client left while it opened)."""
    await _finishing(observers, chat, outcome)
    await _released(observers, chat, outcome)


async def _finishing(observers: Sequence[ChatObserver], chat: Chat, outcome: Outcome) -> None:
    for observer in observers:
        try:
            await observer.finishing(chat, outcome)
        except Exception:
            logger.exception("a chat observer failed at the end of an answer")


async def _released(observers: Sequence[ChatObserver], chat: Chat, outcome: Outcome) -> None:
    for observer in reversed(observers):
        try:
            await observer.released(chat, outcome)
        except Exception:
            logger.exception("a chat observer failed releasing an answer")
