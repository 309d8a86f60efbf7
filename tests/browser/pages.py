"""What the browser tests watch on a page: console errors, uncaught exceptions, dialogs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Dialog, Page

__all__ = ("PageWatch", "watch")


@dataclass
class PageWatch:
    """Everything the page reported that a working page never reports."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.console_errors, *self.page_errors, *(f"dialog: {text}" for text in self.dialogs)]


def watch(page: Page) -> PageWatch:
    seen = PageWatch()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.console_errors.append(message.text)

    async def on_dialog(dialog: Dialog) -> None:
        seen.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
    page.on("dialog", on_dialog)
    return seen
