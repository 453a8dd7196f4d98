"""The base class of every problem the user can fix (shown as its own message, never as 'internal error'), and
the shape of the window's one error path that widgets are handed."""

from __future__ import annotations

from typing import Protocol


class UserError(Exception):
    """A problem the user can fix; shown as its message only, with optional technical details."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ReportError(Protocol):
    """Show a failure to the user (and log it): ``report(title, exception_or_message, prefix="")``."""

    def __call__(self, title: str, exc_or_message: BaseException | str, prefix: str = "") -> None: ...
