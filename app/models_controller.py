"""``GET /models``: the models of every configured provider, for a model picker."""

from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from app.models import ModelCatalog, ModelList
from app.openapi import problem_responses

__all__ = ("ModelsController", "provide_catalog")


def provide_catalog(state: State) -> ModelCatalog:
    catalog: ModelCatalog = state.catalog
    return catalog


class ModelsController(Controller):
    """What a client can put in a chat's ``model``."""

    path = "/models"
    tags = ["models"]  # noqa: RUF012 (Litestar reads this class attribute as given)
    dependencies = {"catalog": Provide(provide_catalog, sync_to_thread=False)}  # noqa: RUF012

    @get(
        "/",
        status_code=200,
        operation_id="listModels",
        summary="List the models of every provider",
        description=(
            "Every configured provider is asked at once (the OpenAI kind `GET {base_url}/models`, the Ollama kind"
            " `GET /api/tags`), each cut off at the smaller of its `timeout_seconds` and"
            " `connect_timeout_seconds` + 5 s; successes are cached per provider for `models_cache_seconds`."
            " Each provider's configured default `model` and its `models` are always listed. A provider that is"
            " down or slow appears in `errors` and never fails the list. Send an entry's `id` as a chat's `model`."
            " The default provider's models come first, then the other providers' in configuration order."
        ),
        responses=problem_responses(500),
    )
    async def list_models(self, catalog: NamedDependency[SkipValidation[ModelCatalog]]) -> ModelList:
        return await catalog.model_list()
