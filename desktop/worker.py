"""Run blocking work (model loading, synthesis, device checks) off the Tk thread.

The worker thread never touches a widget: it puts messages on a :class:`queue.Queue`, and the Tk
thread drains that queue with ``after`` (every 20 ms, at most 20 messages per turn so the window keeps
repainting). Callbacks therefore always run on the Tk thread.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

POLL_MS = 20
BATCH = 20


@dataclass
class Job:
    name: str
    on_done: Callable[[Any], None]
    on_error: Callable[[BaseException], None]
    on_message: Callable[[str, Any], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    finished: bool = False


class Worker:
    """Starts jobs in daemon threads; delivers their messages and results on the Tk thread."""

    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        self.queue: queue.Queue[tuple[Job, str, Any]] = queue.Queue()
        self.jobs: list[Job] = []
        self._after_id: str | None = None
        self._closed = False

    def start(
        self,
        name: str,
        fn: Callable[[Job, Callable[[str, Any], None]], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        on_message: Callable[[str, Any], None] | None = None,
    ) -> Job:
        """Run ``fn(job, post)`` in a thread; ``post(kind, payload)`` sends a message to ``on_message``."""
        job = Job(name=name, on_done=on_done, on_error=on_error, on_message=on_message or (lambda k, p: None))

        def post(kind: str, payload: Any = None) -> None:
            self.queue.put((job, "message", (kind, payload)))

        def body() -> None:
            try:
                result = fn(job, post)
            except BaseException as exc:  # delivered to on_error on the Tk thread
                if not isinstance(exc, Exception):
                    log.exception("job %s died", name)
                self.queue.put((job, "error", exc))
            else:
                self.queue.put((job, "done", result))

        job.thread = threading.Thread(target=body, name=f"job-{name}", daemon=True)
        self.jobs.append(job)
        job.thread.start()
        self._schedule()
        return job

    @property
    def busy(self) -> bool:
        return any(not j.finished for j in self.jobs)

    def _schedule(self) -> None:
        if self._after_id is None and not self._closed:
            self._after_id = self.root.after(POLL_MS, self._poll)

    def _poll(self) -> None:
        self._after_id = None
        for _ in range(BATCH):
            try:
                job, kind, payload = self.queue.get_nowait()
            except queue.Empty:
                break
            try:
                if kind == "message":
                    job.on_message(*payload)
                elif kind == "done":
                    job.finished = True
                    job.on_done(payload)
                else:
                    job.finished = True
                    job.on_error(payload)
            except Exception:  # a failing callback must not stop the pump
                log.exception("callback of job %s failed", job.name)
                self.root.report_callback_exception(*sys.exc_info())
        self.jobs = [j for j in self.jobs if not j.finished]
        if self.jobs or not self.queue.empty():
            self._schedule()

    def close(self, timeout: float = 2.0) -> None:
        """Cancel running jobs and wait briefly for their threads."""
        self._closed = True
        for job in self.jobs:
            job.cancel.set()
        for job in self.jobs:
            if job.thread is not None:
                job.thread.join(timeout)
        if self._after_id is not None:
            try:
                self.root.after_cancel(self._after_id)
            except tk.TclError:
                pass
            self._after_id = None
