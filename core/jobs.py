"""One queue for synthesis jobs from every front end (the GUI, the local API, ...).

:class:`JobGate` admits a bounded number of waiting jobs (beyond it :meth:`JobGate.submit` raises
:class:`QueueFull` with a retry estimate), runs them one at a time in submission order, and tells listeners about
each job (queued, started, progress, finished, failed) so a window can show API jobs in its status and log. The
engine's own lock still guards the models: a job that does not pass through the gate (or one from another gate)
simply makes the gate's running job wait inside ``Engine.synthesize``.

    ticket = gate.submit("api", "Hello there")     # QueueFull when too many are waiting
    with ticket:                                   # waits for its turn (Cancelled if ``cancel`` is set meanwhile)
        engine.synthesize(request, on_progress=ticket.progress)
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from .api import Cancelled, EngineError, Progress

log = logging.getLogger(__name__)

EventKind = Literal["queued", "started", "progress", "finished", "failed", "cancelled"]


class QueueFull(EngineError):
    """Too many jobs are waiting; ``retry_after`` is a whole number of seconds worth waiting."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        self.waiting, self.retry_after = waiting, retry_after
        super().__init__(f"The speech queue is full ({waiting} job(s) waiting); try again in about {retry_after} s.")


@dataclass
class JobInfo:
    id: int
    source: str  # who asked: "gui", "api", ...
    label: str  # a few words for a status line (the start of the text)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class JobEvent:
    kind: EventKind
    job: JobInfo
    progress: Progress | None = None
    error: str = ""


Listener = Callable[[JobEvent], None]


@dataclass(frozen=True)
class GateStatus:
    running: JobInfo | None
    waiting: tuple[JobInfo, ...]


class JobGate:
    """At most ``max_waiting`` jobs wait; one runs. Thread-safe; listeners run on the job's thread."""

    def __init__(self, max_waiting: int = 4, *, default_seconds: float = 5.0) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be 0 or more")
        self.max_waiting = max_waiting
        self._default_seconds = default_seconds
        self._cond = threading.Condition()
        self._waiting: deque[JobInfo] = deque()
        self._running: JobInfo | None = None
        self._listeners: list[Listener] = []
        self._durations: deque[float] = deque(maxlen=20)
        self._ids = itertools.count(1)

    # --------------------------------------------------------------------------------------------- listeners

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every job event; returns a function that removes it again."""
        with self._cond:
            self._listeners.append(listener)

        def remove() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _emit(self, event: JobEvent) -> None:
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken status display must never break a job
                log.exception("job listener failed on %s", event.kind)

    # ------------------------------------------------------------------------------------------------ queue

    def status(self) -> GateStatus:
        with self._cond:
            return GateStatus(self._running, tuple(self._waiting))

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the mean recent job time for each job ahead (at least 1)."""
        with self._cond:
            mean = sum(self._durations) / len(self._durations) if self._durations else self._default_seconds
            ahead = len(self._waiting) + (1 if self._running else 0)
        return max(1, math.ceil(mean * max(ahead, 1)))

    def submit(self, source: str, label: str = "", cancel: threading.Event | None = None, *,
               bounded: bool = True) -> Ticket:
        """Queue a job; :class:`QueueFull` when ``max_waiting`` jobs already wait (the running one not counted).
        ``bounded=False`` always admits the job (a user's own click in the window is never refused).

        A set ``cancel`` event takes a job still waiting out of the queue (``with ticket`` raises Cancelled)."""
        with self._cond:
            busy = self._running is not None or bool(self._waiting)
            if bounded and busy and len(self._waiting) >= self.max_waiting:
                full = len(self._waiting)
            else:
                info = JobInfo(next(self._ids), source, label)
                self._waiting.append(info)
                full = -1
        if full >= 0:
            raise QueueFull(full, self.retry_after())
        self._emit(JobEvent("queued", info))
        return Ticket(self, info, cancel)

    def _take_turn(self, info: JobInfo, cancel: threading.Event | None) -> None:
        with self._cond:
            while info in self._waiting and (self._running is not None or self._waiting[0] is not info):
                if cancel is not None and cancel.is_set():
                    break
                self._cond.wait(0.1 if cancel is not None else None)
            if info in self._waiting and self._waiting[0] is info and self._running is None:
                self._waiting.popleft()
                self._running = info
                info.started_at = time.monotonic()
                started = True
            else:
                started = False
        if not started:  # cancelled while waiting, or withdrawn by another thread (which reported it)
            self._withdraw(info)
            raise Cancelled()
        self._emit(JobEvent("started", info))

    def _withdraw(self, info: JobInfo) -> bool:
        """Take a waiting job out of the queue and report it cancelled; False when it was not waiting."""
        with self._cond:
            if info not in self._waiting:
                return False
            self._waiting.remove(info)
            self._cond.notify_all()
        info.finished_at = time.monotonic()
        self._emit(JobEvent("cancelled", info))
        return True

    def _finish(self, info: JobInfo, error: BaseException | None) -> None:
        info.finished_at = time.monotonic()
        with self._cond:
            if self._running is info:
                self._running = None
                if error is None and info.started_at is not None:
                    self._durations.append(info.finished_at - info.started_at)
            self._cond.notify_all()
        if error is None:
            self._emit(JobEvent("finished", info))
        elif isinstance(error, Cancelled):
            self._emit(JobEvent("cancelled", info, error=str(error)))
        else:
            self._emit(JobEvent("failed", info, error=" ".join(str(error).splitlines()) or type(error).__name__))


class Ticket:
    """One submitted job: ``with ticket:`` waits for its turn, runs the body, then lets the next job go."""

    def __init__(self, gate: JobGate, info: JobInfo, cancel: threading.Event | None = None) -> None:
        self.gate, self.info, self.cancel = gate, info, cancel
        self._entered = False

    def progress(self, p: Progress) -> None:
        """An ``on_progress`` callback for the engine that reports to the gate's listeners."""
        self.gate._emit(JobEvent("progress", self.info, progress=p))

    def withdraw(self) -> bool:
        """Leave the queue without running, from any thread (a later ``with ticket`` raises Cancelled); False
        when the job is not waiting (it runs or ran already)."""
        return not self._entered and self.gate._withdraw(self.info)

    def __enter__(self) -> Ticket:
        self.gate._take_turn(self.info, self.cancel)
        self._entered = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.gate._finish(self.info, exc)
