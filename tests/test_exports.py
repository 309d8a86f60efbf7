"""Package ``__all__`` lists stay complete and true."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import app
import providers

MODULES = sorted(
    name
    for package in (app, providers)
    for name in [package.__name__, *(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__))]
    if name != "app.asgi"  # builds an app from the real configuration at import
)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert missing == []


def test_providers_package_exports_every_public_name_of_its_modules() -> None:
    public = {
        item
        for info in pkgutil.iter_modules(providers.__path__)
        if info.name not in ("upstream_errors",)
        for item in importlib.import_module(f"providers.{info.name}").__all__
    }
    internal = {"error_for_status", "redact", "error_event", "display_url", "fit_message", "finish_with_calls"}
    assert public - internal <= set(providers.__all__)
