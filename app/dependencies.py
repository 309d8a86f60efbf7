"""Per-request dependencies: the pipeline, and the request resolved into a chat plan."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, SkipValidation

from app.chat import ChatPipeline, ChatPlan, ChatRequest
from app.principal import client_address, principal_of

__all__ = ("DEPENDENCIES", "provide_chat_plan", "provide_pipeline")


def provide_pipeline(state: State) -> ChatPipeline:
    pipeline: ChatPipeline = state.pipeline
    return pipeline


async def provide_chat_plan(
    request: Request[Any, Any, Any],
    data: JSONBody[SkipValidation[ChatRequest]],
    pipeline: NamedDependency[SkipValidation[ChatPipeline]],
) -> ChatPlan:
    """Validate the body (strictly: ``SkipValidation`` hands over the decoded JSON) and resolve who answers it.

    Raises:
        AgentError: the body is not a valid chat request, or its ``model`` cannot be routed.
    """
    return await pipeline.plan(data, principal_of(request), client_address(request))


DEPENDENCIES = {
    "pipeline": Provide(provide_pipeline, sync_to_thread=False),
    "plan": Provide(provide_chat_plan),
}
