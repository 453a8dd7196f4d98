"""One queue for every job on the app's one engine: studio generations, voice preparation, project renders and
local-API requests all take their turn through the same :class:`core.jobs.JobGate`.

:class:`EngineTurns` is what the window holds instead of a bare lock: ``with turns.turn(source, label, cancel):``
waits for the job's turn (a cancel while waiting ends it with :class:`core.api.Cancelled`), and ``with turns:``
(a model load) waits the same way without a cancel. :class:`GatedEngine` is the app's engine seen by a
front end that calls ``synthesize`` many times (the project render queue): every call takes its own turn, so a
studio or API job waits at most one line of a long render.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from core.api import (
    Cancelled,
    ChunkCallback,
    EngineProtocol,
    ModelLimits,
    ProgressCallback,
    SegmentCallback,
    SynthesisRequest,
    SynthesisResult,
)
from core.jobs import JobGate, Ticket
from core.project.render import model_fingerprint

MAX_WAITING = 4  # API requests waiting beyond this get 429; the window's own jobs are always admitted


class EngineTurns:
    """The app's engine queue (one job at a time, in submission order)."""

    def __init__(self, gate: JobGate | None = None) -> None:
        self.gate = gate or JobGate(MAX_WAITING)
        self._loads = threading.local()  # the load ticket of each thread inside ``with turns:``

    @contextmanager
    def turn(self, source: str, label: str = "", cancel: threading.Event | None = None) -> Iterator[Ticket]:
        """Wait for this job's turn, run the body, then let the next job go."""
        ticket = self.gate.submit(source, label, cancel, bounded=False)
        with ticket:
            yield ticket

    def __enter__(self) -> EngineTurns:  # ``with turns:`` (model loading): a turn that cannot be cancelled
        ticket = self.gate.submit("load", "loading the models", bounded=False)
        ticket.__enter__()
        self._loads.ticket = ticket
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        ticket, self._loads.ticket = self._loads.ticket, None
        ticket.__exit__(exc_type, exc, tb)


class GatedEngine:
    """``engine`` with every ``synthesize`` call taking its own turn in ``turns`` (labelled ``source``).

    A job of many calls must not mix models: when the models were reloaded between two turns (another
    fingerprint), the next call ends the job with :class:`Cancelled` and :attr:`reloaded` says why."""

    def __init__(self, engine: EngineProtocol, turns: EngineTurns, source: str) -> None:
        self._engine, self._turns, self._source = engine, turns, source
        self._fingerprint = model_fingerprint(engine)
        self.reloaded = False

    def __getattr__(self, name: str) -> Any:  # pipeline (the model fingerprint), device_choice, ...
        return getattr(self._engine, name)

    def load(self, model_dir: str | Path | None, device: str = "auto", fp16: bool | None = None,
             on_progress: ProgressCallback | None = None) -> None:
        with self._turns:
            self._engine.load(model_dir, device, fp16, on_progress)

    @property
    def loaded(self) -> bool:
        return self._engine.loaded

    @property
    def limits(self) -> ModelLimits | None:
        return self._engine.limits

    def split_text(self, text: str, max_tokens: int = 120, lang: str | None = None) -> list[str]:
        return self._engine.split_text(text, max_tokens, lang)

    def ignored_marks(self, text: str, max_tokens: int = 120, lang: str | None = None) -> int:
        return self._engine.ignored_marks(text, max_tokens, lang)

    def prepare_voice(self, clip: str | Path) -> object:
        with self._turns.turn(self._source, f"preparing {Path(clip).name}"):
            return self._engine.prepare_voice(clip)

    def synthesize(self, request: SynthesisRequest, *, on_progress: ProgressCallback | None = None,
                   on_segment: SegmentCallback | None = None, cancel: threading.Event | None = None,
                   on_chunk: ChunkCallback | None = None) -> SynthesisResult:
        with self._turns.turn(self._source, request.text[:40], cancel):
            if model_fingerprint(self._engine) != self._fingerprint:
                self.reloaded = True
                raise Cancelled("The models were reloaded during the job.")
            return self._engine.synthesize(request, on_progress=on_progress, on_segment=on_segment, cancel=cancel,
                                           on_chunk=on_chunk)
