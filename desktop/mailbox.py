"""Hand items from any thread to the Tk thread: :meth:`Mailbox.post` is thread-safe, and the Tk thread receives
every item posted since the last turn in one ``handler(items)`` call (an ``after`` every ``poll_ms`` while items
keep coming). Used for events of the engine queue (local-API jobs) and of an open project (a render updating
rows), which arrive on worker and server threads.
"""

from __future__ import annotations

import logging
import queue
import tkinter as tk
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, root: tk.Misc, handler: Callable[[list[T]], None], poll_ms: int = 50) -> None:
        self.root, self.handler, self.poll_ms = root, handler, poll_ms
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._after: str | None = None
        self._closed = False
        self._poll()

    def post(self, item: T) -> None:
        """From any thread."""
        self._queue.put(item)

    def _poll(self) -> None:
        self._after = None
        if self._closed:
            return
        self.drain()
        try:
            self._after = self.root.after(self.poll_ms, self._poll)
        except tk.TclError:  # the window is gone
            self._closed = True

    def drain(self) -> None:
        """Deliver what has arrived now (the Tk thread)."""
        items: list[T] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if items:
            try:
                self.handler(items)
            except Exception:  # a failing handler must not stop the pump
                log.exception("mailbox handler failed")

    def close(self) -> None:
        self._closed = True
        if self._after is not None:
            try:
                self.root.after_cancel(self._after)
            except tk.TclError:
                pass
            self._after = None
