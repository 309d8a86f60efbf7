"""The chat features the settings turn on, each set up for the app's lifetime.

Every feature that takes part in chats (history, rate limits, metrics, resume…) is opened here
in the lifespan, with whatever it holds open (a database engine, a Redis client), and closed
again in reverse order at shutdown. The pipeline calls the features in the order listed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from litestar import Litestar

from app.chat import ChatFeature
from app.config import Settings
from app.history import open_history
from app.limits import RateLimitFeature, RateLimits
from app.ops.telemetry import TelemetryFeature
from app.streams import LiveAnswers, ResumeFeature
from app.streams.redis import RedisStreams

__all__ = ("chat_features",)


@asynccontextmanager
async def chat_features(app: Litestar, settings: Settings) -> AsyncIterator[list[ChatFeature]]:
    """The features to hand the pipeline; what they hold open lives until the block ends."""
    async with AsyncExitStack() as stack:  # a feature that holds resources enters its context on it
        # Telemetry first: it sees every chat, refused ones too, and is released last.
        features: list[ChatFeature] = [TelemetryFeature(log_prompts=settings.logging.log_prompts)]
        limits: RateLimits | None = app.state.get("rate_limits")
        if limits is not None:  # before any feature that stores or calls out: a chat over its budget touches nothing
            stack.push_async_callback(limits.aclose)
            features.append(RateLimitFeature(limits))
        features.extend(app.state.get("extra_features", ()))
        features.append(await stack.enter_async_context(open_history(app, settings)))
        app.state.live_answers = app.state.redis_streams = None
        if settings.streams.resume:  # after history: it names the stored conversation in meta
            app.state.live_answers = answers = LiveAnswers()
            redis = _redis_streams(app, settings, answers)
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            features.append(ResumeFeature(answers, redis))
        app.state.feature_resources = stack
        yield features


def _redis_streams(app: Litestar, settings: Settings, answers: LiveAnswers) -> RedisStreams | None:
    """Redis for resume across replicas (``streams.redis_url``, else ``rate_limit.redis_url``), listening for stops."""
    url = settings.streams.redis_url or settings.rate_limit.redis_url
    if not url:
        return None
    redis = app.state.redis_streams = RedisStreams(url, settings.rate_limit.key_prefix)

    def stop(key: str) -> None:
        for answer in answers.all():
            if redis.conversation_key(answer.owner, answer.conversation_id) == key:
                app.state.pipeline.stop_conversation(answer.owner, answer.conversation_id)

    redis.listen_for_stops(stop)
    return redis
