"""The base class of every problem the user can fix: shown as its own message, never as 'internal error'."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; shown as its message only, with optional technical details."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details
