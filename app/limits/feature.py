"""Rate limits as a chat feature: every chat, whatever its transport, is counted and holds a stream slot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.chat.hooks import ChatObserver, Outcome
from app.limits.limits import RateLimits

if TYPE_CHECKING:
    from app.chat.run import Chat

__all__ = ("RateLimitFeature", "budget_key")


def budget_key(chat: Chat) -> tuple[str, str]:
    """Whose budget a chat uses, and how messages name it: the principal, or the client's address when auth is off."""
    principal = chat.plan.principal
    if principal.kind == "anonymous":
        return "ip:" + chat.plan.client, chat.plan.client
    return "p:" + principal.name, repr(principal.name)


class RateLimitFeature:
    """Admits a chat within ``requests_per_minute`` and ``concurrent_streams``; its slot comes back on every outcome."""

    __slots__ = ("_limits",)

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits

    async def admit(self, chat: Chat) -> ChatObserver:
        key, who = budget_key(chat)
        # An authenticated chat also checks its address's failed authentications, in the same
        # step: chat routes leave that check to here (app.auth.middleware.ADDRESS_CHECKED_ON_ADMISSION).
        address = chat.plan.client if chat.plan.principal.kind != "anonymous" else None
        token = await self._limits.admit(key, who, address=address)
        return _Slot(self._limits, key, token)


class _Slot(ChatObserver):
    __slots__ = ("_key", "_limits", "_token")

    def __init__(self, limits: RateLimits, key: str, token: str) -> None:
        self._limits = limits
        self._key = key
        self._token = token

    async def released(self, chat: Chat, outcome: Outcome) -> None:
        await self._limits.release(self._key, self._token)
