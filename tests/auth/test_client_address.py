"""The client address that limits count per (CONTRACT §7): the peer, or what a trusted proxy says."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.datastructures import State

from app.config import Settings
from app.principal import FORWARDING_PEER, client_address_of_scope
from app.sections import RateLimitSettings


class FakeApp:
    def __init__(self, proxies: list[str]) -> None:
        self.state = State({"settings": Settings(rate_limit=RateLimitSettings(trusted_proxies=proxies))})


def scope(peer: str, forwarded: list[str], proxies: list[str]) -> Any:
    return {
        "type": "http",
        "client": (peer, 5000),
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
        "litestar_app": FakeApp(proxies),
    }


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        ("127.0.0.1", ["6.6.6.6"], [], "127.0.0.1"),  # nothing trusted: the header is ignored (uvicorn's trust too)
        ("10.0.0.5", ["6.6.6.6"], ["127.0.0.1"], "10.0.0.5"),  # the peer is not a trusted proxy
        ("127.0.0.1", ["1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),
        ("127.0.0.1", ["9.9.9.9, 1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),  # a client-written left entry is not believed
        ("127.0.0.1", ["9.9.9.9, 1.2.3.4, 10.1.2.3"], ["127.0.0.1", "10.0.0.0/8"], "1.2.3.4"),
        ("127.0.0.1", ["9.9.9.9", "1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),  # several headers are one list
        ("127.0.0.1", [], ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", ["10.0.0.1, 10.0.0.2"], ["127.0.0.0/8", "10.0.0.0/8"], "10.0.0.1"),  # all trusted: left-most
        ("::1", ["2001:db8::7"], ["::1"], "2001:db8::7"),
        ("127.0.0.1", ["garbage, 1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),
        ("127.0.0.1", ["1.2.3.4:5678"], ["127.0.0.1"], "1.2.3.4"),  # a port some proxies add
        ("127.0.0.1", ["[2001:db8::7]:80"], ["127.0.0.1"], "2001:db8::7"),
        ("5.5.5.5", ["9.9.9.9"], [], "5.5.5.5"),  # a client cannot pass for another
        ("5.5.5.5", ["9.9.9.9"], ["127.0.0.1"], "5.5.5.5"),
        # The server (uvicorn trusts loopback) already put the forwarded address in place of the peer's:
        ("1.2.3.4", ["1.2.3.4"], [], FORWARDING_PEER),  # not believed: every such request is "the proxy"
        ("1.1.1.1", ["6.6.6.6, 1.1.1.1"], [], FORWARDING_PEER),
        ("1.2.3.4", ["9.9.9.9, 1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),  # believed as trusted_proxies says
        ("10.0.0.2", ["1.2.3.4, 10.0.0.2"], ["10.0.0.0/8"], "1.2.3.4"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], proxies: list[str], expected: str) -> None:
    assert client_address_of_scope(scope(peer, forwarded, proxies)) == expected


@given(st.lists(st.text(max_size=80), max_size=4))
def test_any_forwarded_header_gives_a_short_address(forwarded: list[str]) -> None:
    headers = [value.encode("utf-8", "replace") for value in forwarded]
    result = client_address_of_scope(
        {
            "type": "http",
            "client": ("127.0.0.1", 1),
            "headers": [(b"x-forwarded-for", value) for value in headers],
            "litestar_app": FakeApp(["127.0.0.1"]),
        }
    )
    assert 0 < len(result) <= 64


def test_a_bad_trusted_proxy_stops_start_up() -> None:
    from app.config import ConfigError

    with pytest.raises(ConfigError, match=r"rate_limit\.trusted_proxies .*'10\.0\.0\.0/33'"):
        Settings(rate_limit=RateLimitSettings(trusted_proxies=["10.0.0.0/33"]))


def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import load_settings

    monkeypatch.setenv("AGENT_RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    assert load_settings().rate_limit.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]
    monkeypatch.setenv("AGENT_RATE_LIMIT__TRUSTED_PROXIES", '["::1"]')
    assert load_settings().rate_limit.trusted_proxies == ["::1"]
