"""``python -m app`` and the ``agent-backend`` console script: serve on the configured host and port."""

from __future__ import annotations

import uvicorn

from app.factory import load_settings_or_exit

__all__ = ("main",)


def main() -> None:
    """Run the service with uvicorn (uvloop + httptools, the stack the benchmark measures)."""
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
