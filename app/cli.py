"""The service's CLI plugin: ``litestar run`` binds the configured address; ``litestar keys create`` makes keys."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from litestar.plugins import CLIPluginProtocol

if TYPE_CHECKING:
    from click import Group

    from app.config import Settings

__all__ = ("HostPortFromSettings",)


class HostPortFromSettings(CLIPluginProtocol):
    """``litestar run`` reads host and port only from flags or ``LITESTAR_HOST``/``LITESTAR_PORT``.

    The app is loaded before ``run`` parses its options, so setting those variables' defaults
    here makes our configuration the default, while explicit flags and variables still win.
    """

    __slots__ = ("_settings",)

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def on_cli_init(self, cli: Group) -> None:
        from app.auth.cli import keys_group

        os.environ.setdefault("LITESTAR_HOST", self._settings.host)
        os.environ.setdefault("LITESTAR_PORT", str(self._settings.port))
        cli.add_command(keys_group)
