"""``GET /metrics`` (Prometheus text) and the per-request series, from Litestar's Prometheus integration.

Requests are counted by Litestar's middleware with the route template, not the raw path, as the
``route`` label (``agent_backend_requests_total{method,route,status_code}``, a duration
histogram and an in-progress gauge). With several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to
an empty directory they share and any worker answers ``/metrics`` with the sum of all (the
controller reads prometheus-client's multiprocess files); without it, each worker reports only
its own series.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController, PrometheusMiddleware

__all__ = ("MetricsController", "metrics_config")

_PREFIX: Final = "agent_backend"


class _RouteLabelMiddleware(PrometheusMiddleware):
    """Litestar's middleware with the route template as ``route`` (its own label is the raw ``path``)."""

    def _get_default_labels(self, request: Request[Any, Any, Any]) -> dict[str, str | int | float]:
        kind: str = request.scope["type"]
        return {
            "method": request.method if kind == "http" else kind,
            "route": request.scope.get("path_template") or "<unrouted>",
            "status_code": 200,
        }


class MetricsController(PrometheusController):
    """``GET /metrics``: every series in Prometheus' text format."""

    path = "/metrics"
    include_in_schema = True
    tags = ["system"]  # noqa: RUF012 (Litestar reads this class attribute as given)


def metrics_config() -> PrometheusConfig:
    """The per-request series; ``/metrics`` itself is not counted."""
    return PrometheusConfig(
        app_name="agent-backend",
        prefix=_PREFIX,
        middleware_class=_RouteLabelMiddleware,
        exclude=["^/metrics$"],
    )
