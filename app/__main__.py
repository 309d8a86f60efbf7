"""``python -m app`` and the ``agent-backend`` console script: serve on the configured host and port."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn

from app.factory import load_settings_or_exit

__all__ = ("main",)

_EPILOG = """\
Settings come from settings.toml, .secrets.toml, .env and AGENT_* environment variables
(AGENT_PROVIDERS__LOCAL__BASE_URL=http://localhost:8080/v1, ...); APP_ENV picks the
environment (development, testing, production). The README lists every key."""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the service with uvicorn (uvloop + httptools, the stack the benchmark measures)."""
    parser = argparse.ArgumentParser(
        prog="agent-backend",
        description="Stream local LLM servers' answers to browsers as NDJSON (POST /chat).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to bind (the setting `host`, AGENT_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (the setting `port`, AGENT_PORT; default 8000)")
    args = parser.parse_args(argv)
    # Through the environment, so the flags pass the same checks as the settings they stand for.
    if args.host is not None:
        os.environ["AGENT_HOST"] = args.host
    if args.port is not None:
        os.environ["AGENT_PORT"] = str(args.port)
    settings = load_settings_or_exit()
    uvicorn.run(
        "app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()
