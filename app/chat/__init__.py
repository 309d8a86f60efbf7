"""The chat pipeline every transport calls: plan, open, pump, end (see :mod:`app.chat.run`)."""

from __future__ import annotations

from app.chat.hooks import ChatFeature, ChatObserver, Outcome
from app.chat.request import ChatRequest, parse_chat_request
from app.chat.routing import Attempt, route
from app.chat.run import Chat, ChatPipeline, ChatPlan, ChatRun, Send

__all__ = (
    "Attempt",
    "Chat",
    "ChatFeature",
    "ChatObserver",
    "ChatPipeline",
    "ChatPlan",
    "ChatRequest",
    "ChatRun",
    "Outcome",
    "Send",
    "parse_chat_request",
    "route",
)
