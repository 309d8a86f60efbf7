"""Authentication (CONTRACT §7): API keys and HTTP Basic for HTTP, the ``bearer.<key>`` subprotocol for WebSockets."""

from __future__ import annotations

from app.auth.credentials import KEY_PREFIX, Authenticator, key_hash, new_api_key, presented_credential
from app.auth.middleware import (
    ADDRESS_CHECKED_ON_ADMISSION,
    OPEN_PATHS,
    PLAYGROUND_PREFIX,
    AuthMiddleware,
    auth_middleware,
    open_paths,
)
from app.auth.redaction import SecretRedaction, install_log_redaction
from app.auth.websocket import (
    WS_SUBPROTOCOL,
    WebSocketHandshake,
    accepted_subprotocol,
    origin_refusal,
    refuse_handshake,
)

__all__ = (
    "ADDRESS_CHECKED_ON_ADMISSION",
    "KEY_PREFIX",
    "OPEN_PATHS",
    "PLAYGROUND_PREFIX",
    "WS_SUBPROTOCOL",
    "AuthMiddleware",
    "Authenticator",
    "SecretRedaction",
    "WebSocketHandshake",
    "accepted_subprotocol",
    "auth_middleware",
    "install_log_redaction",
    "key_hash",
    "new_api_key",
    "open_paths",
    "origin_refusal",
    "presented_credential",
    "refuse_handshake",
)
