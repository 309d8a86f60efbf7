"""``GET /ready``: whether this process can answer (CONTRACT §5), without calling any upstream.

The database and Redis are asked (each feature that uses one registers a check); providers'
status comes from the model listings' cache. A failing database or Redis, or a service in its
shutdown grace period, makes it 503; an unreachable provider is reported but does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec

__all__ = ("Readiness", "ReadyReport", "ready")

Check = Callable[[], Awaitable[str]]
_CHECK_SECONDS: Final = 2.0


class ReadyReport(msgspec.Struct):
    """The ``/ready`` body."""

    status: str
    checks: dict[str, object]


class Readiness:
    """What ``/ready`` asks: named checks (``"ok"``, ``"disabled"`` or a short reason), providers, shutdown."""

    __slots__ = ("_checks", "providers", "stopping")

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self.providers: Callable[[], Mapping[str, str]] = dict
        self.stopping: Callable[[], bool] = lambda: False

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def report(self, names: tuple[str, ...]) -> ReadyReport:
        results: dict[str, object] = {}
        for name in names:
            check = self._checks.get(name)
            results[name] = "disabled" if check is None else await _bounded(check)
        results["providers"] = dict(self.providers())
        failing = any(results[name] not in ("ok", "disabled") for name in names)
        status = "not_ready" if failing or self.stopping() else "ready"
        return ReadyReport(status=status, checks=results)


async def _bounded(check: Check) -> str:
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            return await check()
    except TimeoutError:
        return f"no answer within {_CHECK_SECONDS:g} s"
    except Exception as exc:  # a check that fails is a reason, not a 500
        return f"check failed ({type(exc).__name__})"


@get(
    "/ready",
    operation_id="ready",
    tags=["system"],
    summary="Readiness check",
    responses={503: ResponseSpec(data_container=ReadyReport, description="not ready: a store fails, or shutting down")},
)
async def ready(state: State) -> Response[ReadyReport]:
    """The service can answer: its database and Redis answer, and it is not shutting down."""
    readiness: Readiness = state.readiness
    report = await readiness.report(("database", "redis"))
    return Response(report, status_code=200 if report.status == "ready" else 503)
