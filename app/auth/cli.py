"""``litestar keys create <name>``: a new API key, shown once, and the line that configures it."""

from __future__ import annotations

import re
from typing import Final

import click

from app.auth.credentials import key_hash, new_api_key

__all__ = ("keys_group",)

_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


@click.group("keys")
def keys_group() -> None:
    """API keys: `create NAME` makes one (configured as auth.api_keys.NAME)."""


@keys_group.command("create")
@click.argument("name")
def create_key(name: str) -> None:
    """Print a new random API key for NAME, once, and the line to put into .secrets.toml.

    NAME becomes the principal (case-insensitive): the owner of its conversations and the holder
    of its rate limits. Only the key's SHA-256 is configured; the key itself is not stored anywhere.
    """
    if not _NAME.fullmatch(name):
        raise click.BadParameter("1-64 letters, digits, '_' or '-'", param_hint="NAME")
    name = name.lower()
    key = new_api_key()
    line = f'auth.api_keys.{name} = "{key_hash(key)}"'
    click.echo(f"API key for {name!r} (shown only now; give it to its user, then forget it):")
    click.echo("")
    click.echo(key)
    click.echo("")
    click.echo("Put this line into .secrets.toml under [production] (or [default]), then restart the service:")
    click.echo("")
    click.echo(line)
    click.echo("")
    click.echo(f"or set the environment variable AGENT_AUTH__API_KEYS__{name.upper()}={key_hash(key)}")


if __name__ == "__main__":  # python -m app.auth.cli create <name>: works before any credential is configured
    keys_group(prog_name="python -m app.auth.cli")
