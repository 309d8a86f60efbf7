"""Rate limits (CONTRACT §7): per caller requests and open streams, per address failed authentications."""

from __future__ import annotations

from app.limits.backend import WINDOW_SECONDS, LimitBackend, Refusal, StoreUnavailable
from app.limits.feature import RateLimitFeature, budget_key
from app.limits.limits import RateLimits, backend_for
from app.limits.memory import MemoryBackend
from app.limits.redis import RedisBackend

__all__ = (
    "WINDOW_SECONDS",
    "LimitBackend",
    "MemoryBackend",
    "RateLimitFeature",
    "RateLimits",
    "RedisBackend",
    "Refusal",
    "StoreUnavailable",
    "backend_for",
    "budget_key",
)
