"""Configuration: the layers, env-var parsing and fail-fast validation (CONTRACT §2).

Every test runs in its own ``tmp_path`` with the process environment scrubbed of
``AGENT_*``, ``APP_ENV`` and Dynaconf's own variables, so nothing from the developer's
shell, ``.env`` or ``.secrets.toml`` can leak in, and nothing a test loads leaks out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.chat import route
from app.config import ConfigError, Settings, env_var, load_settings
from providers.config import OllamaConfig, OpenAIConfig
from providers.registry import ProviderRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-secret-123"


def _is_config_var(name: str) -> bool:
    upper = name.upper()
    return (
        upper.startswith(("AGENT_", "DYNACONF_"))
        or upper.endswith("_FOR_DYNACONF")
        or upper in {"APP_ENV", "LOAD_DOTENV"}
    )


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No configuration variables from outside; whatever a ``.env`` writes is undone afterwards."""
    snapshot = dict(os.environ)
    for name in list(os.environ):
        if _is_config_var(name):
            monkeypatch.delenv(name)
    yield
    # Dynaconf's .env loading writes straight into os.environ, behind monkeypatch's back.
    for name in set(os.environ) - set(snapshot):
        del os.environ[name]
    for name, value in snapshot.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory holding only the project's ``settings.toml``."""
    shutil.copy(REPO_ROOT / "settings.toml", tmp_path / "settings.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _load_error(workdir: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(workdir)
    return str(info.value)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_from_the_project_settings_toml(workdir: Path) -> None:
    settings = load_settings(workdir)

    assert settings.env == "development"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.cors_origins == ["http://localhost:5173"]
    assert settings.default_provider == "local"
    assert list(settings.providers) == ["local"]
    local = settings.providers["local"]
    assert local.kind == "openai"
    assert local.base_url == "http://localhost:1234/v1"
    assert local.model == "local-model"
    assert local.max_tokens == 512
    assert local.connect_timeout_seconds == 5
    assert local.timeout_seconds == 120
    assert local.api_key == ""


def test_struct_defaults_agree_with_settings_toml(workdir: Path) -> None:
    assert load_settings(workdir) == Settings()


# --- layers -----------------------------------------------------------------------------------

# Each layer sets port and providers.local.model to its own value; base_url is set only at the
# bottom, so every layer above must merge into providers.local rather than replace it.
_LAYERS = ("settings_default", "settings_env", "secrets_default", "secrets_env", "dotenv", "environ")


def _write_layers(workdir: Path, monkeypatch: pytest.MonkeyPatch, top: str) -> None:
    present = _LAYERS[: _LAYERS.index(top) + 1]
    settings = (
        '[default]\nport = 8001\n[default.providers.local]\nbase_url = "http://bottom:1/v1"\n'
        'model = "m-settings-default"\n'
    )
    if "settings_env" in present:
        settings += (
            "[development]\ndynaconf_merge = true\nport = 8002\n"
            '[development.providers.local]\nmodel = "m-settings-env"\n'
        )
    (workdir / "settings.toml").write_text(settings)
    secrets = ""
    if "secrets_default" in present:
        secrets += (
            '[default]\ndynaconf_merge = true\nport = 8003\n[default.providers.local]\nmodel = "m-secrets-default"\n'
        )
    if "secrets_env" in present:
        secrets += (
            "[development]\ndynaconf_merge = true\nport = 8004\n"
            '[development.providers.local]\nmodel = "m-secrets-env"\n'
        )
    if secrets:
        (workdir / ".secrets.toml").write_text(secrets)
    if "dotenv" in present:
        (workdir / ".env").write_text("AGENT_PORT=8005\nAGENT_PROVIDERS__LOCAL__MODEL=m-dotenv\n")
    if "environ" in present:
        monkeypatch.setenv("AGENT_PORT", "8006")
        monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__MODEL", "m-environ")


@pytest.mark.parametrize(
    ("top", "port", "model"),
    [
        ("settings_default", 8001, "m-settings-default"),
        ("settings_env", 8002, "m-settings-env"),
        ("secrets_default", 8003, "m-secrets-default"),
        ("secrets_env", 8004, "m-secrets-env"),
        ("dotenv", 8005, "m-dotenv"),
        ("environ", 8006, "m-environ"),
    ],
)
def test_each_layer_overrides_the_ones_below(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, top: str, port: int, model: str
) -> None:
    _write_layers(workdir, monkeypatch, top)

    settings = load_settings(workdir)

    assert settings.port == port
    assert settings.providers["local"].model == model
    assert settings.providers["local"].base_url == "http://bottom:1/v1"


def test_env_section_of_settings_toml_setting_one_provider_key_keeps_the_rest(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The natural way to point production elsewhere: only base_url under [production].
    # (settings.toml sets no model, so that the kind's own default applies: set one here.)
    text = (REPO_ROOT / "settings.toml").read_text()
    assert "\nmax_tokens = 512\n" in text
    text = text.replace("\nmax_tokens = 512\n", '\nmax_tokens = 777\nmodel = "qwen2.5-7b-instruct"\n')
    text += '\n[production.providers.local]\nbase_url = "http://llm.internal:8080/v1"\n'
    (workdir / "settings.toml").write_text(text)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__OPS", PRODUCTION_KEY_HASH)  # production needs a credential

    local = load_settings(workdir).providers["local"]

    assert local.base_url == "http://llm.internal:8080/v1"
    assert local.model == "qwen2.5-7b-instruct"
    assert local.max_tokens == 777


def test_secrets_file_setting_only_the_api_key_keeps_the_rest_of_the_provider(workdir: Path) -> None:
    example = (REPO_ROOT / ".secrets.toml.example").read_text()
    assert 'api_key = ""' in example
    (workdir / ".secrets.toml").write_text(example.replace('api_key = ""', f'api_key = "{SECRET}"'))

    local = load_settings(workdir).providers["local"]

    assert local.api_key == SECRET
    assert local.base_url == "http://localhost:1234/v1"
    assert local.model == "local-model"
    assert local.max_tokens == 512


@pytest.mark.parametrize("layer", ["settings_env_section", "secrets_file"])
def test_list_in_a_higher_file_layer_replaces_the_lower_one(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, layer: str
) -> None:
    # Like AGENT_CORS_ORIGINS: a production origin list must not silently keep the dev origin.
    origins = 'cors_origins = ["https://app.example"]\n'
    if layer == "settings_env_section":
        text = (REPO_ROOT / "settings.toml").read_text()
        headers = [line.strip() for line in text.splitlines() if line.startswith("[")]
        assert headers[-1] == "[production]"  # so appending lands in [production]
        (workdir / "settings.toml").write_text(text + origins)
    else:
        example = (REPO_ROOT / ".secrets.toml.example").read_text()
        head = "[production]\n"
        assert head in example
        (workdir / ".secrets.toml").write_text(example.replace(head, head + origins))
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__OPS", PRODUCTION_KEY_HASH)  # production needs a credential

    assert load_settings(workdir).cors_origins == ["https://app.example"]


def test_secrets_example_as_is_changes_nothing(workdir: Path) -> None:
    shutil.copy(REPO_ROOT / ".secrets.toml.example", workdir / ".secrets.toml")

    assert load_settings(workdir) == Settings()


#: Production refuses to start without a credential (CONTRACT §7); any well-formed key hash will do here.
PRODUCTION_KEY_HASH = "sha256:" + "0" * 64


# --- APP_ENV ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_env", "env", "port"),
    [
        (None, "development", 8101),
        ("development", "development", 8101),
        ("testing", "testing", 8102),
        ("production", "production", 8103),
        ("PRODUCTION", "production", 8103),
    ],
)
def test_app_env_selects_the_section(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, app_env: str | None, env: str, port: int
) -> None:
    (workdir / "settings.toml").write_text(
        "[default]\nport = 8100\n[development]\nport = 8101\n[testing]\nport = 8102\n[production]\nport = 8103\n"
    )
    if app_env is not None:
        monkeypatch.setenv("APP_ENV", app_env)

    settings = load_settings(workdir)

    assert settings.env == env
    assert settings.port == port


def test_project_settings_toml_quietens_logs_in_testing_only(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(workdir).log_level == "info"
    monkeypatch.setenv("APP_ENV", "production")  # its request and stream lines are info
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__OPS", PRODUCTION_KEY_HASH)  # production needs a credential
    assert load_settings(workdir).log_level == "info"
    monkeypatch.setenv("APP_ENV", "testing")
    assert load_settings(workdir).log_level == "warning"


def test_unknown_app_env_fails_naming_app_env(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "prod")

    message = _load_error(workdir)

    assert "\n" not in message
    assert "APP_ENV" in message
    assert "'prod'" in message


# --- environment variable parsing -------------------------------------------------------------


def test_env_port_is_parsed_as_int(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PORT", "9000")

    port = load_settings(workdir).port

    assert port == 9000
    assert type(port) is int


def test_env_cors_origins_list_replaces_the_default(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CORS_ORIGINS", '["http://a", "http://b"]')

    assert load_settings(workdir).cors_origins == ["http://a", "http://b"]


def test_env_nested_key_overrides_only_that_key(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__BASE_URL", "http://127.0.0.1:8080/v1")

    settings = load_settings(workdir)

    assert list(settings.providers) == ["local"]
    local = settings.providers["local"]
    assert local.base_url == "http://127.0.0.1:8080/v1"
    assert local == OpenAIConfig(base_url="http://127.0.0.1:8080/v1")  # everything else as before


def test_provider_defined_only_through_env_gets_provider_defaults(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__OLLAMA__BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("AGENT_PROVIDERS__Ollama__MODEL", "llama3.2")  # names are case-insensitive

    providers = load_settings(workdir).providers

    assert set(providers) == {"local", "ollama"}
    assert providers["ollama"] == OpenAIConfig(base_url="http://localhost:11434/v1", model="llama3.2")
    assert providers["local"] == OpenAIConfig()


async def test_env_default_provider_selects_it_case_insensitively(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__OLLAMA__BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("AGENT_PROVIDERS__OLLAMA__MODEL", "llama3.2")
    monkeypatch.setenv("AGENT_DEFAULT_PROVIDER", "OLLAMA")

    settings = load_settings(workdir)
    async with httpx.AsyncClient() as client:
        registry = ProviderRegistry.build(settings.providers, settings.default_provider, client)
    (attempt,) = await route(None, registry)

    assert settings.default_provider.lower() == "ollama"
    assert (attempt.provider.name, attempt.model) == ("ollama", None)  # None: the provider's own default
    assert settings.providers["ollama"].model == "llama3.2"


def test_all_digit_api_key_from_env_stays_a_string(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__API_KEY", "12345")

    assert load_settings(workdir).providers["local"].api_key == "12345"


@pytest.mark.parametrize("value", ["007", "1e5", "0x1F", "1_000", "+42", "true", "2024-01-01"])
def test_string_keys_from_env_are_kept_verbatim(workdir: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # Dynaconf parses env values as TOML; a string setting must still get exactly the text given.
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__API_KEY", value)
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__MODEL", value)

    local = load_settings(workdir).providers["local"]

    assert local.api_key == value
    assert local.model == value


# --- fail fast, one line, naming the key -------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "key", "var"),
    [
        ({"AGENT_PORT": "abc", "AGENT_PROVIDERS__LOCAL__API_KEY": SECRET}, "port", "AGENT_PORT"),
        ({"AGENT_PORT": "70000"}, "port", "AGENT_PORT"),
        ({"AGENT_PORT": "0"}, "port", "AGENT_PORT"),
        (
            {"AGENT_PROVIDERS__LOCAL__KIND": "anthropic", "AGENT_PROVIDERS__LOCAL__API_KEY": SECRET},
            "providers.local.kind",
            "AGENT_PROVIDERS__LOCAL__KIND",
        ),
        ({"AGENT_DEFAULT_PROVIDER": "nope"}, "default_provider", "AGENT_DEFAULT_PROVIDER"),
        (
            {"AGENT_PROVIDERS__LOCAL__BASE_URL": "localhost:1234", "AGENT_PROVIDERS__LOCAL__API_KEY": SECRET},
            "providers.local.base_url",
            "AGENT_PROVIDERS__LOCAL__BASE_URL",
        ),
        *(
            ({"AGENT_PROVIDERS__LOCAL__BASE_URL": url}, "providers.local.base_url", "AGENT_PROVIDERS__LOCAL__BASE_URL")
            for url in (
                "http://localhost:99999/v1",
                "http://127.0.0.1:0/v1",
                "http://exa mple.com/v1",
                "http://a..b/v1",
                "http://999.1.1.1/v1",
                f"http://x/v1?api_key={SECRET}",
                f"ftp://user:{SECRET}@host/v1",
                f"http://user:{SECRET}@[bad/v1",
            )
        ),
        *(({"AGENT_HOST": host}, "host", "AGENT_HOST") for host in ("", "999.1.1.1", "my host")),
        (
            {"AGENT_PROVIDERS__LOCAL__TIMEOUT_SECONDS": "0"},
            "providers.local.timeout_seconds",
            "AGENT_PROVIDERS__LOCAL__TIMEOUT_SECONDS",
        ),
        (
            {"AGENT_PROVIDERS__LOCAL__CONNECT_TIMEOUT_SECONDS": "-1"},
            "providers.local.connect_timeout_seconds",
            "AGENT_PROVIDERS__LOCAL__CONNECT_TIMEOUT_SECONDS",
        ),
        (
            {"AGENT_PROVIDERS__LOCAL__TIMEOUT_SECONDS": "soon", "AGENT_PROVIDERS__LOCAL__API_KEY": SECRET},
            "providers.local.timeout_seconds",
            "AGENT_PROVIDERS__LOCAL__TIMEOUT_SECONDS",
        ),
    ],
    ids=[
        "port-not-a-number",
        "port-too-big",
        "port-zero",
        "kind-unknown",
        "default_provider-undefined",
        "base_url-no-scheme",
        "base_url-port-too-big",
        "base_url-port-zero",
        "base_url-space",
        "base_url-empty-label",
        "base_url-bad-ipv4",
        "base_url-query-with-secret",
        "base_url-ftp-with-password",
        "base_url-broken-ipv6-with-password",
        "host-empty",
        "host-bad-ipv4",
        "host-space",
        "timeout-zero",
        "connect_timeout-negative",
        "timeout-not-a-number",
    ],
)
def test_bad_config_fails_with_one_line_naming_key_and_variable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], key: str, var: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    message = _load_error(workdir)

    assert "\n" not in message
    assert f"{key} ({var})" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@my-llm.internal:8080/v1",
        "http://[::1]:8080/v1",
        "https://api.openai.com/v1",
        "http://localhost./v1",
    ],
)
def test_good_base_urls_are_accepted(workdir: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__BASE_URL", url)
    assert load_settings(workdir).providers["local"].base_url == url


def test_mistyped_secret_is_not_echoed(workdir: Path) -> None:
    # From the environment a string setting takes the variable's text as it is; in a file a
    # list where a string belongs is an error, which must not show the value.
    (workdir / "settings.toml").write_text(f'[default.providers.local]\napi_key = ["{SECRET}"]\n')

    message = _load_error(workdir)

    assert "providers.local.api_key (AGENT_PROVIDERS__LOCAL__API_KEY)" in message
    assert SECRET not in message


def test_bad_value_in_settings_toml_names_key_and_variable(workdir: Path) -> None:
    (workdir / "settings.toml").write_text(
        '[default]\n[default.providers.local]\nkind = "openia"\napi_key = "sk-secret-123"\n'
    )

    message = _load_error(workdir)

    assert "\n" not in message
    assert "providers.local.kind (AGENT_PROVIDERS__LOCAL__KIND)" in message
    assert SECRET not in message


@pytest.mark.parametrize("filename", ["settings.toml", ".secrets.toml"])
def test_malformed_toml_fails_with_one_line_naming_the_file(workdir: Path, filename: str) -> None:
    (workdir / filename).write_text('[default]\nport = \napi_key = "sk-secret-123"\n')

    message = _load_error(workdir)

    assert "\n" not in message
    assert "line 2" in message
    assert filename in message
    assert SECRET not in message


# --- the struct itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"port": 0}, "port (AGENT_PORT)"),
        ({"default_provider": "nope"}, "default_provider (AGENT_DEFAULT_PROVIDER)"),
        ({"providers": {"local": OpenAIConfig(timeout_seconds=0)}}, "providers.local.timeout_seconds"),
        ({"env": "prod"}, "APP_ENV"),
    ],
)
def test_settings_constructed_directly_is_validated(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("(", r"\(").replace(")", r"\)")):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_provider_config_repr_hides_the_api_key() -> None:
    config = OpenAIConfig(api_key=SECRET)

    assert SECRET not in repr(config)
    assert SECRET not in repr(Settings(providers={"local": config}))
    assert SECRET not in str(config)


# --- models and providers (CONTRACT §9) -------------------------------------------------------


def test_project_settings_leave_base_url_and_model_to_the_kind(workdir: Path) -> None:
    text = (REPO_ROOT / "settings.toml").read_text()
    table = text.split("[default.providers.local]", 1)[1].split("\n[", 1)[0]
    active = [line.split("=", 1)[0].strip() for line in table.splitlines() if "=" in line and not line.startswith("#")]
    assert "kind" in active
    assert "base_url" not in active
    assert "model" not in active


def test_switching_a_provider_to_ollama_is_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__KIND", "ollama")

    local = load_settings(workdir).providers["local"]

    assert local == OllamaConfig()
    assert (local.kind, local.base_url, local.model) == ("ollama", "http://localhost:11434", "llama3.2")


def test_switching_in_settings_toml_is_one_line_too(workdir: Path) -> None:
    text = (workdir / "settings.toml").read_text()
    assert text.count('kind = "openai"') == 1
    (workdir / "settings.toml").write_text(text.replace('kind = "openai"', 'kind = "ollama"'))

    assert load_settings(workdir).providers["local"] == OllamaConfig()


def test_an_ollama_provider_defined_only_through_env(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LAPTOP__KIND", "ollama")
    monkeypatch.setenv("AGENT_PROVIDERS__LAPTOP__THINK", "false")
    monkeypatch.setenv("AGENT_PROVIDERS__GPU__KIND", "ollama")
    monkeypatch.setenv("AGENT_PROVIDERS__GPU__THINK", "high")
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__FALLBACK", '["laptop"]')

    settings = load_settings(workdir)

    assert settings.providers["laptop"] == OllamaConfig(think=False)
    assert settings.providers["gpu"] == OllamaConfig(think="high")
    assert settings.providers["local"].fallback == ["laptop"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"X-Token" = "v"}', {"x-token": "v"}),
        ('{"X-Token" = "007", "X-Other" = "a b"}', {"x-token": "007", "x-other": "a b"}),
        ('{"X-Token" = 123}', {"x-token": "123"}),
        ('{"X-Token": "v"}', {"x-token": "v"}),  # JSON is fine too
    ],
)
def test_extra_headers_from_env_are_a_table_of_strings(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: dict[str, str]
) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS", value)

    local = load_settings(workdir).providers["local"]

    assert local.extra_headers == expected


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS": f"X-Token: {SECRET}"}, "providers.local.extra_headers"),
        ({"AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS": f'{{"X Token" = "{SECRET}"}}'}, "providers.local.extra_headers"),
        ({"AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS": '{"X-Token" = 1.5}'}, "providers.local.extra_headers"),
        ({"AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS": f'{{"X-Token" = ["{SECRET}"]}}'}, "providers.local.extra_headers"),
        (
            {"AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS": f'{{"X-Token" = "{SECRET}\\nX-Evil: 1"}}'},
            "providers.local.extra_headers",
        ),
        ({"AGENT_PROVIDERS__LOCAL__FALLBACK": '["nope"]'}, "providers.local.fallback"),
        ({"AGENT_PROVIDERS__LOCAL__FALLBACK": '["local/"]'}, "providers.local.fallback"),
        ({"AGENT_PROVIDERS__LOCAL__FALLBACK": '["/model"]'}, "providers.local.fallback"),
        (
            {"AGENT_PROVIDERS__GPU__KIND": "ollama", "AGENT_PROVIDERS__GPU__FALLBACK": "local,laptop"},
            "providers.gpu.fallback",
        ),
        ({"AGENT_PROVIDERS__LOCAL__MODELS": '["ok", " "]'}, "providers.local.models"),
        ({"AGENT_PROVIDERS__LOCAL__MODELS": "[1, 2]"}, "providers.local.models"),
        ({"AGENT_PROVIDERS__LOCAL__KIND": "ollama", "AGENT_PROVIDERS__LOCAL__THINK": "maybe"}, "providers.local.think"),
        ({"AGENT_MODELS_CACHE_SECONDS": "-1"}, "models_cache_seconds"),
        ({"AGENT_MODELS_CACHE_SECONDS": "soon"}, "models_cache_seconds"),
    ],
    ids=[
        "headers-not-a-table",
        "header-name-with-space",
        "header-value-a-float",
        "header-value-a-list",
        "header-value-with-line-break",
        "fallback-unknown-provider",
        "fallback-provider-without-model",
        "fallback-without-provider",
        "fallback-comma-list-with-unknown",
        "models-empty-id",
        "models-not-strings",
        "think-not-a-level",
        "cache-negative",
        "cache-not-a-number",
    ],
)
def test_bad_models_and_providers_config_fails_with_one_line_naming_the_key(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], key: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    message = _load_error(workdir)

    assert "\n" not in message
    assert f"error: {key}" in message  # a list item adds its index: providers.local.models[0]
    assert f"({env_var(key)})" in message
    assert SECRET not in message


def test_header_values_are_secrets_kept_out_of_reprs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__EXTRA_HEADERS", f'{{"X-Token" = "{SECRET}"}}')

    settings = load_settings(workdir)

    assert settings.providers["local"].extra_headers == {"x-token": SECRET}
    assert SECRET in settings.providers["local"].secrets
    assert SECRET not in repr(settings)


def test_fallback_and_models_accept_comma_lists(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PROVIDERS__GPU__BASE_URL", "http://gpu:8000/v1")
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__FALLBACK", "GPU, gpu/big-model")
    monkeypatch.setenv("AGENT_PROVIDERS__LOCAL__MODELS", "qwen/qwen3-8b,TheBloke/MyLocalModel")
    monkeypatch.setenv("AGENT_MODELS_CACHE_SECONDS", "2.5")

    settings = load_settings(workdir)

    assert settings.providers["local"].fallback == ["GPU", "gpu/big-model"]
    assert settings.providers["local"].models == ["qwen/qwen3-8b", "TheBloke/MyLocalModel"]
    assert settings.models_cache_seconds == 2.5


def test_fallbacks_are_checked_on_settings_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"providers\.local\.fallback \(AGENT_PROVIDERS__LOCAL__FALLBACK\)"):
        Settings(providers={"local": OpenAIConfig(fallback=["gpu"])})
    settings = Settings(providers={"local": OpenAIConfig(fallback=["GPU/x"]), "gpu": OllamaConfig()})
    assert settings.providers["local"].fallback == ["GPU/x"]


def test_the_readmes_settings_snippets_load(workdir: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    snippets = [block.split("```", 1)[0] for block in readme.split("```toml\n")[1:]]
    assert snippets, "the README has no settings.toml snippet"
    for snippet in snippets:
        (workdir / "settings.toml").write_text(snippet)
        settings = load_settings(workdir)
        assert settings.providers
    assert settings.providers["local"].fallback == ["gpu", "laptop"]
    assert settings.providers["laptop"] == OllamaConfig(base_url="http://laptop.local:11434", models=["llama3.2:1b"])
