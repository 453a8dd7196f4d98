"""The render queue: every line without a current take, in order, one ``Engine.synthesize`` call at a time.

A take is written to ``takes/<line-id>-<n>.wav`` through a temp file, fsync and rename, and only then recorded
in ``project.json`` (saved durably too), so at any moment of a crash the project names only complete takes:
rendering again resumes at the first line without one. The queue runs in the caller's thread (a GUI calls it
from its worker); each finished take is written and recorded by one helper thread while the engine renders the
next line, so ``on_line``, ``on_progress`` and the project's ``status`` events come from either thread (a GUI
hands them to its own). ``cancel`` stops the queue within one engine step.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..api import Cancelled, Emotion, EngineError, EngineProtocol, Progress, SynthesisRequest
from ..files import write_wav_atomic
from .model import Line, Project, Take
from .store import TAKES_DIR

log = logging.getLogger(__name__)

MAX_PASSES = 3  # lines edited while the queue runs are picked up by another pass


class TakeWriteError(EngineError):
    """A take or project.json could not be written (disk full, folder gone): the queue stops."""


@dataclass
class RenderProgress:
    """Where the queue is: ``done`` of ``total`` lines through the engine (rendered or failed), the current line
    and its own progress. Reported from the thread that called :func:`render`, in order."""

    done: int
    total: int
    line_id: str | None
    index: int  # of the line in the project, -1 when none
    line_fraction: float
    stage: str
    elapsed: float
    eta: float | None  # seconds left (None until a line is done)
    rtf: float | None  # engine seconds per second of audio so far

    @property
    def fraction(self) -> float:
        return min(1.0, (self.done + self.line_fraction) / self.total) if self.total else 1.0


LineOutcome = Literal["rendered", "failed"]


@dataclass
class LineResult:
    line_id: str
    index: int
    outcome: LineOutcome
    take: Take | None = None
    error: str | None = None
    engine_seconds: float = 0.0
    seconds: float = 0.0  # the whole step: key, synthesis, write, save
    overrun: float = 0.0


@dataclass
class RenderReport:
    rendered: int = 0
    current: int = 0  # lines that already had a current take
    locked: int = 0
    failed: list[LineResult] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    engine_seconds: float = 0.0
    audio_seconds: float = 0.0


def model_fingerprint(engine: EngineProtocol) -> str:
    """Identifies the loaded models (a take made with other models is not current)."""
    try:
        pipeline = getattr(engine, "pipeline", None)
    except EngineError:
        pipeline = None
    fingerprint = getattr(pipeline, "fingerprint", None)
    return str(fingerprint) if fingerprint else type(engine).__name__


def needs_render(project: Project, line: Line, model: str) -> bool:
    """True when the line is not locked and has no current, existing take."""
    if project.status(line, model) == "locked":
        return False
    take = line.active_take
    if take is None or project.status(line, model) != "current":
        return True
    return not (project.folder / take.file).is_file()


def plan(project: Project, model: str, only: Iterable[str] | None = None) -> tuple[list[str], int, int]:
    """``(ids to render in order, lines current, lines locked)``; ``only`` limits it to those line ids."""
    wanted = set(only) if only is not None else None
    todo, current, locked = [], 0, 0
    with project.lock:
        for line in project.lines:
            if wanted is not None and line.id not in wanted:
                continue
            if line.locked:
                locked += 1
            elif needs_render(project, line, model):
                todo.append(line.id)
            else:
                current += 1
    return todo, current, locked


class _Queue:
    def __init__(self, project: Project, engine: EngineProtocol, cancel: threading.Event | None,
                 on_progress: Callable[[RenderProgress], None] | None,
                 on_line: Callable[[LineResult], None] | None) -> None:
        self.project, self.engine, self.cancel = project, engine, cancel
        self.on_progress, self.on_line = on_progress, on_line
        self.model = model_fingerprint(engine)
        self.report = RenderReport()
        self.t0 = time.perf_counter()
        self.total = 0
        self.through = 0  # lines the engine has finished with (rendered or failed), for progress
        self.tried: set[str] = set()
        # One take is written (fsync, project.json) while the engine renders the next line: the queue's own time
        # hides behind the synthesis. At most one write is in flight, in line order.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="take-writer")
        self.pending: Future[None] | None = None

    def progress(self, line_id: str | None, index: int, within: float, stage: str) -> None:
        if self.on_progress is None:
            return
        r = self.report
        done = self.through
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - done) if done else None
        rtf = r.engine_seconds / r.audio_seconds if r.audio_seconds else None
        self.on_progress(RenderProgress(done, self.total, line_id, index, within, stage, elapsed, eta, rtf))

    def run(self, only: Iterable[str] | None) -> RenderReport:
        only = list(only) if only is not None else None
        todo, self.report.current, self.report.locked = plan(self.project, self.model, only)
        self.total = len(todo)
        try:
            for _ in range(MAX_PASSES):
                for line_id in todo:
                    if self.cancel is not None and self.cancel.is_set():
                        self.report.cancelled = True
                        break
                    self.tried.add(line_id)
                    if not self.step(line_id):
                        break
                self.drain()
                if self.report.cancelled:
                    break
                todo = [i for i in plan(self.project, self.model, only)[0] if i not in self.tried]
                if not todo:
                    break
                self.total += len(todo)
        finally:
            self.drain(quiet=sys.exc_info()[0] is not None)  # an error in flight wins over a write error
            self.writer.shutdown()
        self.report.seconds = time.perf_counter() - self.t0
        self.progress(None, -1, 0.0, "Cancelled" if self.report.cancelled else "Done")
        return self.report

    def drain(self, quiet: bool = False) -> None:
        """Wait for the take being written (its TakeWriteError, if any, stops the queue)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            if quiet:
                if pending.exception() is not None:
                    log.error("a take could not be written: %s", pending.exception())
                return
            pending.result()

    def step(self, line_id: str) -> bool:
        """Render one line; False when the queue must stop (cancelled)."""
        p = self.project
        t = time.perf_counter()
        with p.lock:
            try:
                index = p.index_of(line_id)
            except EngineError:
                return True  # removed meanwhile
            line = p.lines[index]
            if not needs_render(p, line, self.model):
                return True
            try:
                key = p.take_key(line, self.model)
                request = SynthesisRequest(line.text, p.voice_clip(line), _emotion(p, line), p.effective_settings(line))
                problem = None
            except EngineError as exc:
                problem = str(exc)
        if problem is not None:  # outside the lock: fail() waits for the writer, which takes the lock
            self.fail(line_id, index, problem, t)
            return True
        self.progress(line_id, index, 0.0, "Starting")

        def on_progress(pr: Progress) -> None:
            self.progress(line_id, index, pr.fraction, pr.stage)

        t_engine = time.perf_counter()
        try:
            result = self.engine.synthesize(request, on_progress=on_progress, cancel=self.cancel)
        except Cancelled:
            self.report.cancelled = True
            return False
        except EngineError as exc:
            self.fail(line_id, index, str(exc), t)
            return True
        engine_seconds = time.perf_counter() - t_engine
        self.through += 1
        self.progress(line_id, index, 0.0, "Line done")
        self.drain()  # the previous take is on disk and recorded before this one is handed over
        self.pending = self.writer.submit(self.finish, line_id, key, request.settings.seed or 0, result.audio,
                                          result.sample_rate, engine_seconds, t)
        return True

    def finish(self, line_id: str, key: str, seed: int, audio: np.ndarray, sample_rate: int, engine_seconds: float,
               t: float) -> None:
        """In the writer thread, while the engine renders the next line: write and record the take, report it."""
        take = self.record(line_id, key, seed, audio, sample_rate, engine_seconds)
        if take is None:
            return
        p = self.project
        self.report.rendered += 1
        self.report.engine_seconds += engine_seconds
        self.report.audio_seconds += take.duration
        with p.lock:
            index, overrun = p.index_of(line_id), p.line(line_id).overrun
        self.done(LineResult(line_id, index, "rendered", take, None, engine_seconds, time.perf_counter() - t,
                             overrun))

    def record(self, line_id: str, key: str, seed: int, audio: np.ndarray, sample_rate: int,
               engine_seconds: float) -> Take | None:
        """Write the take file, then record it (the file is complete before project.json names it)."""
        p = self.project
        with p.lock:
            line = p.line(line_id)
            n = max((tk.n for tk in line.takes), default=0) + 1
        rel = f"{TAKES_DIR}/{line_id}-{n}.wav"
        path = p.folder / rel
        try:
            write_wav_atomic(path, audio, sample_rate, overwrite=True, durable=True)
        except EngineError as exc:
            raise TakeWriteError(f"Line {line_id}: {exc} Free some space or fix the folder, then render again "
                                 f"(finished lines are kept).") from exc
        take = Take(n, rel, key, seed, int(len(audio)), sample_rate, time.time(), engine_seconds)
        with p.lock:
            try:
                line = p.line(line_id)
            except EngineError:
                path.unlink(missing_ok=True)
                return None
            before = (list(line.takes), line.active, line.error, p.model)
            line.takes.append(take)
            line.active, line.error, p.model = n, None, self.model
            dropped = _prune(line, p.max_takes)
            try:
                p.save()
            except EngineError as exc:
                line.takes, line.active, line.error, p.model = before
                raise TakeWriteError(f"Line {line_id}: {exc} Free some space, then render again.") from exc
        for old in dropped:
            (p.folder / old.file).unlink(missing_ok=True)
        p.emit("status", [line_id])
        return take

    def fail(self, line_id: str, index: int, message: str, t: float) -> None:
        self.drain()  # lines are reported in order
        p = self.project
        log.warning("line %s failed: %s", line_id, message)
        with p.lock:
            p.line(line_id).error = message
            p.save()
        p.emit("status", [line_id])
        result = LineResult(line_id, index, "failed", None, message, 0.0, time.perf_counter() - t)
        self.report.failed.append(result)
        self.through += 1
        self.done(result)
        self.progress(line_id, index, 0.0, "Line failed")

    def done(self, result: LineResult) -> None:
        if self.on_line is not None:
            self.on_line(result)


def _emotion(project: Project, line: Line) -> Emotion:
    emotion = line.emotion
    if emotion.mode == "audio" and emotion.audio is not None and not emotion.audio.is_absolute():
        return replace(emotion, audio=project.folder / emotion.audio)
    return emotion


def _prune(line: Line, keep: int) -> list[Take]:
    """Drop the oldest takes beyond ``keep`` (never the active one); the dropped takes."""
    dropped = []
    while len(line.takes) > max(keep, 1):
        oldest = next(t for t in line.takes if t.n != line.active)
        line.takes.remove(oldest)
        dropped.append(oldest)
    return dropped


def render(project: Project, engine: EngineProtocol, *, only: Iterable[str] | None = None,
           on_progress: Callable[[RenderProgress], None] | None = None,
           on_line: Callable[[LineResult], None] | None = None,
           cancel: threading.Event | None = None) -> RenderReport:
    """Render every line of ``project`` (or of ``only``) that has no current take; the models must be loaded.

    A line that fails (missing or unusable clip, unreadable text, no speech) is recorded with its error and the
    queue goes on; a take that cannot be written (:class:`TakeWriteError`) stops it. Returns what was done."""
    if project.read_only:
        raise EngineError(f"The project {project.folder} is open read-only; it cannot be rendered here.")
    if not engine.loaded:
        raise EngineError("The models are not loaded yet; load them before rendering the project.")
    project.use_glossary(getattr(engine, "glossary_terms", None))  # takes follow the pronunciation dictionary
    return _Queue(project, engine, cancel, on_progress, on_line).run(only)


def line_path(project: Project, line: Line) -> Path | None:
    """The file of a line's active take (None without one)."""
    take = line.active_take
    return project.folder / take.file if take is not None else None
