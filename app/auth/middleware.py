"""Authentication on every route but the open ones: the principal into ``scope["user"]``, or a 401.

Litestar resolves the route before route middleware runs, so an unknown path is 404 with or
without credentials; this middleware only sees requests for routes that exist. Open (CONTRACT
§7): ``/health``, ``/ready``, ``/schema*`` when ``auth.public_docs``, every ``OPTIONS`` (CORS
preflights), the playground's page and files (:data:`PLAYGROUND_PREFIX`, or any route that sets
``opt={"exclude_from_auth": True}``). Everything else needs an API key (``Authorization: Bearer``,
``X-API-Key``, or the ``bearer.<key>`` WebSocket subprotocol) or, when configured, HTTP Basic.

With rate limits on, an address that failed to authenticate ``auth_failures_per_minute``
times in the last minute is refused with 429 whatever credential it presents. A request with no
credential at all is not an attempt (a page that has not asked for its key yet): it gets its 401
and counts nothing. Chat routes (``opt`` :data:`ADDRESS_CHECKED_ON_ADMISSION`) leave the check of
a request whose key is right to the chat's admission, which makes it in the same step as the
chat's own limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware

from app.auth.credentials import Authenticator, presented_credential
from app.auth.websocket import origin_refusal, refuse_handshake
from app.errors import Unauthorized
from app.principal import Principal, client_address_of_scope
from providers.errors import AgentError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from app.config import Settings
    from app.limits import RateLimits

__all__ = (
    "ADDRESS_CHECKED_ON_ADMISSION",
    "OPEN_PATHS",
    "PLAYGROUND_PREFIX",
    "AuthMiddleware",
    "auth_middleware",
    "open_paths",
)

#: The playground serves its page at ``/`` and its files under this prefix, all without credentials.
PLAYGROUND_PREFIX: Final = "/playground/"
#: Paths (regular expressions, matched against the whole path) that never need credentials.
OPEN_PATHS: Final[list[str]] = ["^/health$", "^/ready$", "^/$", f"^{PLAYGROUND_PREFIX}"]
#: Route ``opt`` key for routes whose every request is a chat the pipeline admits: its rate-limit
#: feature checks the address's failed authentications in the same Redis round trip as the chat's.
ADDRESS_CHECKED_ON_ADMISSION: Final = "auth_failures_checked_on_admission"
_DOCS_PATHS: Final = ("^/schema(/.*)?$",)
_REALM: Final = "agent-backend"
_BEARER_CHALLENGE: Final = f'Bearer realm="{_REALM}"'
_BOTH_CHALLENGES: Final = f'{_BEARER_CHALLENGE}, Basic realm="{_REALM}", charset="UTF-8"'
_MESSAGE: Final = "missing or wrong credentials: send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def _admission_checks_address(scope: Scope) -> bool:
    handler = scope.get("route_handler")
    return bool(handler is not None and handler.opt.get(ADDRESS_CHECKED_ON_ADMISSION))


def open_paths(settings: Settings) -> list[str]:
    """The path patterns the middleware leaves open under ``settings``."""
    return [
        *OPEN_PATHS,
        *(_DOCS_PATHS if settings.auth.public_docs else ()),
        *(("^/metrics$",) if settings.metrics.public else ()),
    ]


def auth_middleware(settings: Settings, limits: RateLimits | None) -> DefineMiddleware:
    """The app's authentication middleware, for ``Litestar(middleware=[...])``."""
    return DefineMiddleware(
        AuthMiddleware,
        authenticator=Authenticator(settings.auth),
        limits=limits,
        cors_origins=tuple(settings.cors_origins),
        exclude=open_paths(settings),
    )


class AuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the caller's :class:`~app.principal.Principal` into ``scope["user"]``, or refuses the request."""

    __slots__ = ("_authenticator", "_cors_origins", "_limits")

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        limits: RateLimits | None,
        cors_origins: Sequence[str],
        exclude: list[str],
    ) -> None:
        super().__init__(app, exclude=exclude)  # and every OPTIONS, Litestar's default
        self._authenticator = authenticator
        self._limits = limits
        self._cors_origins = cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.WEBSOCKET or should_bypass_middleware(
            exclude_opt_key=self.exclude_opt_key, exclude_path_pattern=self.exclude, scope=scope, scopes=self.scopes
        ):
            await super().__call__(scope, receive, send)
            return
        # A WebSocket refusal must be an HTTP answer to the handshake, which exception handlers cannot give.
        refusal = origin_refusal(scope, self._cors_origins)
        if refusal is None:
            try:
                principal = await self._principal(scope)
            except AgentError as exc:
                refusal = exc
        if refusal is not None:
            extra = getattr(refusal, "headers", {})
            await refuse_handshake(scope, send, refusal, extra.items())
            return
        scope["user"] = principal
        scope["auth"] = None
        await self.app(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """The principal for an HTTP request.

        Raises:
            Unauthorized: credentials missing or wrong (401 with ``WWW-Authenticate``).
            RateLimited: the client's address failed too often lately.
            LimitsUnavailable: the failure counters did not answer.
        """
        return AuthenticationResult(user=await self._principal(connection.scope), auth=None)

    async def _principal(self, scope: Scope) -> Principal:
        subprotocols: Sequence[str] = scope.get("subprotocols") or ()  # type: ignore[assignment]  # websocket only
        presented = presented_credential(scope["headers"], subprotocols)
        kind = presented[0]
        limits = self._limits if kind != "none" else None  # no credential, no attempt: nothing to count
        address = client_address_of_scope(scope) if limits is not None else ""
        # A chat route's admission checks the address itself, in the same round trip as the chat's
        # own limits; a password check is slow by design, so a blocked address never gets that far.
        if limits is not None and (kind == "basic" or not _admission_checks_address(scope)):
            await limits.refuse_if_blocked(address)
        principal = await self._authenticator.check(presented)
        if principal is not None:
            return principal
        if limits is not None:
            await limits.count_auth_failure(address)  # or 429 (counting nothing) when blocked already
        raise Unauthorized(_MESSAGE, headers={"WWW-Authenticate": self._challenge(scope)})

    def _challenge(self, scope: Scope) -> str:
        if not self._authenticator.basic:
            return _BEARER_CHALLENGE
        # A Basic challenge makes a browser show its own login dialog, also for fetch(): offer it
        # only where a person may be at the other end (a page load, curl), never to a script's request.
        for name, value in scope["headers"]:
            if (name == b"sec-fetch-mode" and value != b"navigate") or name == b"x-requested-with":
                return _BEARER_CHALLENGE
        return _BOTH_CHALLENGES
