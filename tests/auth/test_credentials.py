"""Keys, Basic credentials and the auth configuration's checks, as pure logic (CONTRACT §7)."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from app.auth import Authenticator, key_hash, new_api_key, presented_credential
from app.config import ConfigError, Settings, settings_from_mapping
from app.principal import Principal
from app.sections import AuthSettings

HASHER = PasswordHasher()


def test_new_keys_have_the_contract_form() -> None:
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"agb_[A-Za-z0-9_-]{43}", key)
        assert len(base64.urlsafe_b64decode(key[4:] + "=")) == 32


def test_key_hash_is_sha256_of_the_whole_key() -> None:
    assert key_hash("abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=6), st.lists(st.text(max_size=30)))
def test_any_headers_parse_without_raising(headers: list[tuple[bytes, bytes]], protocols: list[str]) -> None:
    kind, _, _ = presented_credential(headers, protocols)
    assert kind in ("none", "key", "basic", "invalid")


@pytest.mark.parametrize(
    ("headers", "protocols", "expected"),
    [
        ([], [], ("none", "", "")),
        ([(b"authorization", b"Bearer  k1 ")], [], ("key", "k1", "")),
        ([(b"authorization", b"bearer k1")], [], ("key", "k1", "")),
        ([(b"x-api-key", b"k2")], [], ("key", "k2", "")),
        ([(b"x-api-key", b"k2"), (b"authorization", b"Bearer k1")], [], ("key", "k1", "")),
        ([(b"authorization", b"Basic " + base64.b64encode(b"u:p:q"))], [], ("basic", "u", "p:q")),
        ([(b"authorization", b"Basic " + base64.b64encode(b"nocolon"))], [], ("invalid", "", "")),
        ([(b"authorization", b"Basic %%%")], [], ("invalid", "", "")),
        ([(b"authorization", b"Bearer")], [], ("invalid", "", "")),
        ([(b"authorization", b"Digest x")], [], ("invalid", "", "")),
        ([(b"x-api-key", b"  ")], [], ("invalid", "", "")),
        ([], ["agent-backend.v1", "bearer.k3"], ("key", "k3", "")),
        ([], ["bearer."], ("invalid", "", "")),
        ([(b"x-api-key", b"k2")], ["bearer.k3"], ("key", "k2", "")),
    ],
)
def test_presented_credential(headers: list[tuple[bytes, bytes]], protocols: list[str], expected: Any) -> None:
    assert presented_credential(headers, protocols) == expected


def test_check_key_finds_the_keys_principal() -> None:
    first, second = new_api_key(), new_api_key()
    auth = Authenticator(AuthSettings(api_keys={"alice": key_hash(first), "bob": key_hash(second)}))
    assert auth.check_key(first) == Principal("alice", "api_key")
    assert auth.check_key(second) == Principal("bob", "api_key")
    assert auth.check_key(first[:-1]) is None
    assert auth.check_key("") is None
    assert auth.check_key(key_hash(first)) is None


async def test_argon2_is_checked_off_the_loop_and_a_success_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio.to_thread

    auth = Authenticator(AuthSettings(username="bob", password=HASHER.hash("pw")))
    calls: list[object] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert await auth.check_basic("bob", "pw") == Principal("bob", "basic")
    assert await auth.check_basic("bob", "pw") == Principal("bob", "basic")
    assert len(calls) == 1  # the second came from the cache
    assert await auth.check_basic("bob", "wrong") is None
    assert await auth.check_basic("bob", "wrong") is None
    assert len(calls) == 3  # failures are never cached
    assert await auth.check_basic("alice", "pw") is None


async def test_the_cache_holds_no_credential() -> None:
    auth = Authenticator(AuthSettings(username="bob", password=HASHER.hash("hunter2-secret")))
    assert await auth.check_basic("bob", "hunter2-secret") is not None
    stored = repr(auth._cache) + repr(list(auth._cache))
    assert "hunter2" not in stored
    assert b"hunter2-secret" not in b"".join(auth._cache)


async def test_plain_password_and_user_are_both_compared() -> None:
    auth = Authenticator(AuthSettings(username="bob", password="pw"))
    assert await auth.check_basic("bob", "pw") == Principal("bob", "basic")
    assert await auth.check_basic("bob", "pW") is None
    assert await auth.check_basic("bobby", "pw") is None
    assert await Authenticator(AuthSettings()).check_basic("", "") is None


def auth_settings(**auth: Any) -> dict[str, Any]:
    return {"auth": {"enabled": True, **auth}}


PLAIN_KEY = new_api_key()


@pytest.mark.parametrize(
    "value",
    [PLAIN_KEY, "sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha1:" + "a" * 40, "a" * 64],
    ids=["plain-key", "upper-hex", "short", "sha1", "bare-hex"],
)
def test_a_key_not_in_sha256_form_stops_start_up_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(auth_settings(api_keys={"alice": value}), "development")
    message = str(info.value)
    assert "\n" not in message
    assert "auth.api_keys.alice" in message and "AGENT_AUTH__API_KEYS__ALICE" in message
    assert value not in message
    assert "python -m app.auth.cli create alice" in message  # works while the configuration does not load


def test_env_var_key_names_are_lower_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import load_settings

    digest = key_hash(PLAIN_KEY)
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__ALICE", digest)
    monkeypatch.setenv("AGENT_AUTH__ENABLED", "true")
    settings = load_settings()
    assert settings.auth.api_keys == {"alice": digest}
    assert Authenticator(settings.auth).check_key(PLAIN_KEY) == Principal("alice", "api_key")


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        ({"username": "bob"}, "auth.password"),
        ({"password": "x"}, "auth.username"),
        ({"username": "bob", "password": "$argon2id$v=19$broken"}, "auth.password"),
        ({"api_keys": {"a b": key_hash("x")}}, "auth.api_keys"),
        ({"api_keys": {"a": key_hash("x"), "b": key_hash("x")}}, "auth.api_keys.b"),
    ],
)
def test_unworkable_auth_settings_stop_start_up_in_every_environment(auth: dict[str, Any], key: str) -> None:
    for env in ("development", "production"):
        with pytest.raises(ConfigError, match=re.escape(key)):
            settings_from_mapping(auth_settings(**auth), env)


@pytest.mark.parametrize(
    ("auth", "why"),
    [
        ({}, "no credential is configured"),
        ({"username": "admin", "password": "change-me"}, "sample 'change-me'"),
        ({"username": "admin", "password": HASHER.hash("change-me")}, "sample 'change-me'"),
    ],
)
def test_production_refuses_an_unsafe_configuration(auth: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(auth_settings(**auth), "production")
    assert why in str(info.value)
    assert "\n" not in str(info.value)
    settings_from_mapping(auth_settings(**auth), "development")  # allowed where it is not production


def test_production_accepts_a_real_credential() -> None:
    settings_from_mapping(auth_settings(api_keys={"alice": key_hash(PLAIN_KEY)}), "production")
    settings_from_mapping(auth_settings(username="admin", password=HASHER.hash("a real one")), "production")
    settings_from_mapping({"auth": {"enabled": False}}, "production")  # auth off on purpose (a proxy does it)


def test_production_defaults_turn_auth_and_limits_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import load_settings

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AGENT_AUTH__API_KEYS__OPS", key_hash(PLAIN_KEY))
    settings = load_settings()
    assert settings.auth.enabled and settings.rate_limit.enabled
    monkeypatch.setenv("APP_ENV", "testing")
    settings = load_settings()
    assert not settings.auth.enabled and not settings.rate_limit.enabled
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("AGENT_AUTH__API_KEYS__OPS")
    with pytest.raises(ConfigError, match="no credential"):
        load_settings()


def test_secrets_never_appear_in_the_settings_repr() -> None:
    settings = Settings(auth=AuthSettings(username="bob", password="hunter2-pw", api_keys={"a": key_hash("k")}))
    assert "hunter2-pw" not in repr(settings)
    assert key_hash("k") not in repr(settings)


def test_the_example_sample_password_is_refused_in_production(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from app.config import PROJECT_ROOT, load_settings

    shutil.copy(PROJECT_ROOT / "settings.toml", tmp_path / "settings.toml")
    example = (PROJECT_ROOT / ".secrets.toml.example").read_text("utf-8")
    for line in ('auth.username = "admin"', 'auth.password = "change-me"'):
        assert f"# {line}\n" in example
        example = example.replace(f"# {line}\n", f"{line}\n")  # the sample Basic user, switched on
    (tmp_path / ".secrets.toml").write_text(example, "utf-8")
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigError, match=r"auth\.password .*sample 'change-me'"):
        load_settings(tmp_path)
    monkeypatch.setenv("APP_ENV", "development")
    assert load_settings(tmp_path).auth.username == "admin"  # auth is off there; the sample does no harm
