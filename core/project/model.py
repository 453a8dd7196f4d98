"""A project: lines of text with a speaker, emotion, pause and takes, in a folder with ``project.json``.

The data classes here are plain and torch-free. :class:`Project` owns the lines, saves after every change
(``store.save``) and tells listeners what changed through :class:`ProjectEvent`, so a table refreshes only the
rows named. Every edit goes through a method that invalidates only the lines it touched: their take keys are
recomputed on the next :meth:`Project.status` call, every other line keeps its cached key.

A line's take is *current* when its key (:meth:`Project.take_key`: a SHA-256 over the text, the voice clip's
content, the emotion, the settings, the seed and the model fingerprint) equals the key recorded with its active
take; the render queue renders the lines that are not current and not locked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..api import Emotion, EngineError, GenerationSettings
from ..digest import sha256_file
from .lock import ProjectLock

log = logging.getLogger(__name__)

DEFAULT_MAX_TAKES = 5
DEFAULT_PAUSE_MS = 400
KEY_VERSION = 1  # bump when what shapes a take changes (every take becomes stale)

Status = Literal["pending", "current", "stale", "failed", "locked"]


@dataclass
class Take:
    """One rendered file of a line; recorded only once the file is complete."""

    n: int
    file: str  # relative to the project folder: takes/<line-id>-<n>.wav
    key: str
    seed: int
    samples: int
    sample_rate: int
    created: float = 0.0
    render_seconds: float = 0.0

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "file": self.file, "key": self.key, "seed": self.seed, "samples": self.samples,
                "sample_rate": self.sample_rate, "created": round(self.created, 3),
                "render_seconds": round(self.render_seconds, 4)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Take:
        return cls(int(d["n"]), str(d["file"]), str(d["key"]), int(d["seed"]), int(d["samples"]),
                   int(d["sample_rate"]), float(d.get("created", 0.0)), float(d.get("render_seconds", 0.0)))


@dataclass
class Line:
    """One unit of speech. ``speaker`` is a name in :attr:`Project.voices` or a clip path; ``settings`` holds only
    the generation settings this line changes; ``chapter`` (a title) starts a chapter at this line;
    ``start_ms``/``end_ms`` are the cue times of a subtitle line (timed line)."""

    id: str
    text: str
    speaker: str
    emotion: Emotion = field(default_factory=Emotion)
    pause_ms: int = DEFAULT_PAUSE_MS
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    chapter: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    locked: bool = False
    takes: list[Take] = field(default_factory=list)
    active: int | None = None  # Take.n of the active take
    error: str | None = None  # why the last render of this line failed

    @property
    def timed(self) -> bool:
        return self.start_ms is not None and self.end_ms is not None

    @property
    def active_take(self) -> Take | None:
        return next((t for t in self.takes if t.n == self.active), None)

    @property
    def slot_ms(self) -> int | None:
        """How long a timed line may speak (its cue), None for an untimed line."""
        return self.end_ms - self.start_ms if self.start_ms is not None and self.end_ms is not None else None

    @property
    def overrun(self) -> float:
        """Seconds the active take of a timed line runs past its cue (0 when it fits or the line is untimed)."""
        take, slot = self.active_take, self.slot_ms
        if take is None or slot is None:
            return 0.0
        return max(0.0, take.duration - slot / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text, "speaker": self.speaker}
        if self.emotion != Emotion():
            d["emotion"] = self.emotion.to_dict()
        d["pause_ms"] = self.pause_ms
        optional = {"settings": self.settings or None, "seed": self.seed, "chapter": self.chapter,
                    "start_ms": self.start_ms, "end_ms": self.end_ms, "locked": self.locked or None,
                    "error": self.error}
        d.update({k: v for k, v in optional.items() if v is not None})
        if self.takes:
            d["takes"] = [t.to_dict() for t in self.takes]
            d["active"] = self.active
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Line:
        def opt_int(key: str) -> int | None:
            return None if d.get(key) is None else int(d[key])

        return cls(
            id=str(d["id"]), text=str(d["text"]), speaker=str(d.get("speaker", "")),
            emotion=Emotion.from_dict(d.get("emotion") or {}), pause_ms=int(d.get("pause_ms", DEFAULT_PAUSE_MS)),
            settings=dict(d.get("settings") or {}), seed=opt_int("seed"), chapter=d.get("chapter"),
            start_ms=opt_int("start_ms"), end_ms=opt_int("end_ms"), locked=bool(d.get("locked", False)),
            takes=[Take.from_dict(t) for t in d.get("takes") or []], active=opt_int("active"), error=d.get("error"),
        )


@dataclass(frozen=True)
class Chapter:
    """A run of lines that starts at a line with a chapter title (the lines before the first title form an
    untitled opening chapter)."""

    index: int
    title: str
    first: int  # index of its first line
    count: int

    def lines(self, project: Project) -> list[Line]:
        return project.lines[self.first:self.first + self.count]


EventKind = Literal["lines", "status", "structure", "project"]


@dataclass(frozen=True)
class ProjectEvent:
    """What changed: ``lines``: the content of the named lines; ``status``: their takes or render state;
    ``structure``: lines added, removed or moved (refresh the whole table); ``project``: title, voices or
    settings (every line's status may have changed)."""

    kind: EventKind
    ids: tuple[str, ...] = ()


Listener = Callable[[ProjectEvent], None]


@dataclass
class _Clip:
    size: int
    mtime_ns: int
    digest: str


class Project:
    """The lines and settings of one project folder. Thread-safe: edits and the render queue share ``lock``.

    Listeners are called in the thread that made the change (the render worker for ``status`` events): a GUI
    hands them to its own thread (``after``)."""

    def __init__(self, folder: Path, *, title: str = "", author: str = "", lines: Iterable[Line] = (),
                 voices: Mapping[str, str] | None = None, settings: GenerationSettings | None = None,
                 max_takes: int = DEFAULT_MAX_TAKES, model: str | None = None, next_id: int = 1) -> None:
        self.folder = Path(folder)
        self.title, self.author = title, author
        self.lines: list[Line] = list(lines)
        self.voices: dict[str, str] = dict(voices or {})
        self.settings = settings or GenerationSettings()
        self.max_takes = max_takes
        self.model = model  # fingerprint of the models the last take was rendered with
        self.next_id = max(next_id, 1)
        self.read_only = False
        self.notices: list[str] = []  # said once on open (backup used, read-only because open elsewhere, ...)
        self.lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._keys: dict[str, tuple[str, str, str, str, str]] = {}  # id -> (model, voice, emo clip, terms, key)
        # The engine's glossary_terms (set by the render queue or a GUI through use_glossary): take keys then hold
        # the pronunciation entries each line uses, so changing one reading makes exactly its lines stale.
        self._glossary_terms: Callable[[str], Mapping[str, Any]] | None = None
        self._clips: dict[str, _Clip] = {}
        self._file_lock: ProjectLock | None = None
        self._index: dict[str, int] | None = None

    # ------------------------------------------------------------------------------------ open/save

    @classmethod
    def create(cls, folder: str | Path, lines: Iterable[Line], **kwargs: Any) -> Project:
        """A new project in ``folder`` (created; it must not hold a project already), saved and locked."""
        from . import store

        return store.create(cls(Path(folder), lines=lines, **kwargs))

    @classmethod
    def open(cls, folder: str | Path, *, read_only: bool = False) -> Project:
        """Open ``folder``: read-only (with a notice) when another process has it open."""
        from . import store

        return store.open_project(cls, Path(folder), read_only=read_only)

    def save(self) -> None:
        from . import store

        with self.lock:
            store.save(self)

    def save_as(self, folder: str | Path) -> Project:
        """A copy of this project (lines, takes) in a new, empty folder, opened there (this one stays open)."""
        from . import store

        folder = Path(folder)
        with self.lock:
            store.check_empty(folder)
            data = self.to_dict()
            data["voices"] = {name: str(self._resolve(Path(ref)).resolve()) for name, ref in self.voices.items()}
            copy = Project.from_data(folder, data)
            # the takes first: the saved json must never name a file that is not there
            store.copy_takes(self.folder, folder, [t.file for line in copy.lines for t in line.takes])
            return store.create(copy)

    @classmethod
    def from_data(cls, folder: Path, data: Mapping[str, Any]) -> Project:
        """A project from the content of a project.json (a ProjectFileError naming what is damaged)."""
        from .store import PROJECT_FILE, ProjectFileError

        try:
            lines = [Line.from_dict(d) for d in data["lines"]]
            project = cls(folder, title=str(data.get("title", "")), author=str(data.get("author", "")), lines=lines,
                          voices={str(k): str(v) for k, v in (data.get("voices") or {}).items()},
                          settings=GenerationSettings.from_dict(data.get("settings") or {}),
                          max_takes=int(data.get("max_takes", DEFAULT_MAX_TAKES)), model=data.get("model"),
                          next_id=int(data.get("next_id", len(lines) + 1)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProjectFileError(f"{folder / PROJECT_FILE} has a damaged entry ({type(exc).__name__}: {exc}).") \
                from None
        ids = [line.id for line in project.lines]
        if len(set(ids)) != len(ids):
            raise ProjectFileError(f"{folder / PROJECT_FILE} has two lines with the same id.")
        return project

    def close(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_dict(self) -> dict[str, Any]:
        from .store import SCHEMA_VERSION

        return {"schema_version": SCHEMA_VERSION, "title": self.title, "author": self.author,
                "max_takes": self.max_takes, "model": self.model, "next_id": self.next_id, "voices": self.voices,
                "settings": self.settings.to_dict(), "lines": [line.to_dict() for line in self.lines]}

    # ------------------------------------------------------------------------------------ events

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` after every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, kind: EventKind, ids: Iterable[str] = ()) -> None:
        event = ProjectEvent(kind, tuple(ids))
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must not stop an edit or the render
                log.exception("project listener failed on %s", event)

    def _changed(self, kind: EventKind, ids: Iterable[str] = ()) -> None:
        """After an edit: forget the cached keys it touched, save, tell listeners."""
        ids = tuple(ids)
        if kind in ("lines", "project"):
            if kind == "project":
                self._keys.clear()
            for i in ids:
                self._keys.pop(i, None)
        if kind == "structure":
            self._index = None
        self.save()
        self.emit(kind, ids)

    # ------------------------------------------------------------------------------------ lookup

    def new_id(self) -> str:
        n, self.next_id = self.next_id, self.next_id + 1
        return f"{n:05d}"

    def index_of(self, line_id: str) -> int:
        if self._index is None or len(self._index) != len(self.lines):
            self._index = {line.id: i for i, line in enumerate(self.lines)}
        i = self._index.get(line_id)
        if i is None or self.lines[i].id != line_id:
            self._index = {line.id: k for k, line in enumerate(self.lines)}
            i = self._index.get(line_id)
        if i is None:
            raise EngineError(f"No line {line_id} in the project.")
        return i

    def line(self, line_id: str) -> Line:
        return self.lines[self.index_of(line_id)]

    def chapters(self) -> list[Chapter]:
        starts = [i for i, line in enumerate(self.lines) if line.chapter]
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        bounds = starts + [len(self.lines)]
        chapters: list[Chapter] = []
        for a, b in zip(bounds, bounds[1:]):
            if b > a:
                chapters.append(Chapter(len(chapters), self.lines[a].chapter or self.title or "Opening", a, b - a))
        return chapters

    # ------------------------------------------------------------------------------------ edits

    def _edit(self, line_id: str, **changes: Any) -> None:
        with self.lock:
            self._writable()
            line = self.line(line_id)
            for name, value in changes.items():
                setattr(line, name, value)
            line.error = None
            self._changed("lines", [line_id])

    def set_text(self, line_id: str, text: str) -> None:
        self._edit(line_id, text=check_text(text, f"Line {line_id}"))

    def set_speaker(self, line_id: str, speaker: str) -> None:
        self._edit(line_id, speaker=self._check_speaker(speaker))

    def set_emotion(self, line_id: str, emotion: Emotion) -> None:
        self._edit(line_id, emotion=emotion.validate())

    def set_pause(self, line_id: str, pause_ms: int) -> None:
        if isinstance(pause_ms, bool) or not isinstance(pause_ms, int) or not 0 <= pause_ms <= 600_000:
            raise EngineError(f"The pause after a line is a whole number of milliseconds from 0 to 600000 "
                              f"(got {pause_ms!r}).")
        self._edit(line_id, pause_ms=pause_ms)

    def set_line_settings(self, line_id: str, settings: Mapping[str, Any]) -> None:
        """Generation settings of this line that differ from the project's (an empty mapping: none)."""
        merged = GenerationSettings.from_dict({**self.settings.to_dict(), **settings})
        merged.validate()
        unknown = set(settings) - set(GenerationSettings.__dataclass_fields__)
        if unknown:
            raise EngineError(f"Unknown generation setting(s): {', '.join(sorted(unknown))}.")
        self._edit(line_id, settings=dict(settings))

    def set_seed(self, line_id: str, seed: int | None) -> None:
        if seed is not None:
            replace(self.settings, seed=seed).validate()
        self._edit(line_id, seed=seed)

    def set_chapter(self, line_id: str, title: str | None) -> None:
        """Start a chapter titled ``title`` at this line (None or blank: no chapter starts here)."""
        with self.lock:
            self._writable()
            self.line(line_id).chapter = (title or "").strip() or None
            self._changed("structure", [line_id])  # chapter boundaries move; the audio does not

    def set_locked(self, line_id: str, locked: bool) -> None:
        with self.lock:
            self._writable()
            self.line(line_id).locked = bool(locked)
            self._changed("status", [line_id])

    def assign(self, line_ids: Iterable[str], *, speaker: str | None = None, emotion: Emotion | None = None) -> None:
        """Bulk edit: give every named line this speaker and/or emotion (one save)."""
        with self.lock:
            self._writable()
            ids = list(line_ids)
            if speaker is not None:
                speaker = self._check_speaker(speaker)
            if emotion is not None:
                emotion.validate()
            for i in ids:
                line = self.line(i)
                if speaker is not None:
                    line.speaker = speaker
                if emotion is not None:
                    line.emotion = emotion
                line.error = None
            self._changed("lines", ids)

    def insert_line(self, index: int, text: str, speaker: str, **fields_: Any) -> Line:
        with self.lock:
            self._writable()
            line = Line(self.new_id(), check_text(text, "The new line"), self._check_speaker(speaker), **fields_)
            self.lines.insert(max(0, min(index, len(self.lines))), line)
            self._changed("structure", [line.id])
            return line

    def remove_lines(self, line_ids: Iterable[str]) -> None:
        """Remove lines (their take files stay in takes/ until the project is cleaned)."""
        with self.lock:
            self._writable()
            gone = set(line_ids)
            self.lines = [line for line in self.lines if line.id not in gone]
            for i in gone:
                self._keys.pop(i, None)
            self._changed("structure", sorted(gone))

    def move_line(self, line_id: str, to_index: int) -> None:
        with self.lock:
            self._writable()
            line = self.lines.pop(self.index_of(line_id))
            self.lines.insert(max(0, min(to_index, len(self.lines))), line)
            self._changed("structure", [line_id])

    def regenerate(self, line_ids: Iterable[str]) -> None:
        """Ask for a new take of each line: a fresh seed, so the next render adds a take (earlier ones are
        kept, up to ``max_takes``)."""
        with self.lock:
            self._writable()
            ids = list(line_ids)
            locked = [i for i in ids if self.line(i).locked]
            if locked:
                raise EngineError(f"Line {locked[0]} is locked; unlock it to render a new take.")
            for i in ids:
                self.line(i).seed = secrets.randbelow(2**31)
                self.line(i).error = None
            self._changed("lines", ids)

    def choose_take(self, line_id: str, n: int) -> None:
        """Make take ``n`` the active one (the line's seed follows it, so the take is current again)."""
        with self.lock:
            self._writable()
            line = self.line(line_id)
            take = next((t for t in line.takes if t.n == n), None)
            if take is None:
                raise EngineError(f"Line {line_id} has no take {n}.")
            line.active, line.seed = n, take.seed
            self._keys.pop(line_id, None)
            self._changed("status", [line_id])

    def set_voice(self, name: str, clip: str | Path) -> None:
        """Map a speaker name to a voice clip (every line of that speaker may become stale)."""
        with self.lock:
            self._writable()
            if not name.strip():
                raise EngineError("A speaker needs a name.")
            self.voices[name.strip()] = str(clip)
            self._changed("project")

    def set_settings(self, settings: GenerationSettings) -> None:
        with self.lock:
            self._writable()
            self.settings = settings.validate()
            self._changed("project")

    def _writable(self) -> None:
        if self.read_only:
            raise EngineError(f"The project {self.folder} is open read-only; changes cannot be saved.")

    def _check_speaker(self, speaker: str) -> str:
        speaker = (speaker or "").strip()
        if not speaker:
            raise EngineError("A line needs a speaker: a voice name of the project or a clip path.")
        return speaker

    # ------------------------------------------------------------------------------------ keys

    def voice_clip(self, line: Line) -> Path:
        """The clip file of a line's speaker (relative paths are inside the project folder)."""
        ref = self.voices.get(line.speaker)
        if ref is None:
            if Path(line.speaker).suffix:
                ref = line.speaker
            else:
                raise EngineError(f"Line {line.id}: the speaker {line.speaker!r} has no voice. Map it to a clip "
                                  f"(--voice {line.speaker}=clip.wav) or choose another speaker.")
        path = Path(ref)
        return path if path.is_absolute() else self.folder / path

    def clip_digest(self, clip: Path, role: str) -> str:
        """SHA-256 of a clip's content, cached while its size and mtime stay the same."""
        try:
            st = clip.stat()
        except OSError:
            raise EngineError(f"The {role} clip {clip} is missing. Put it back or choose another clip.") from None
        cached = self._clips.get(str(clip))
        if cached is None or (cached.size, cached.mtime_ns) != (st.st_size, st.st_mtime_ns):
            cached = _Clip(st.st_size, st.st_mtime_ns, sha256_file(clip))
            self._clips[str(clip)] = cached
        return cached.digest

    def effective_settings(self, line: Line) -> GenerationSettings:
        """The project settings with the line's own on top and the line's seed (always a fixed seed, so a
        render can be repeated exactly)."""
        merged = GenerationSettings.from_dict({**self.settings.to_dict(), **line.settings})
        return replace(merged, seed=self.seed_of(line, merged))

    @staticmethod
    def seed_of(line: Line, settings: GenerationSettings) -> int:
        if line.seed is not None:
            return line.seed
        if settings.seed is not None:
            return settings.seed
        return int(hashlib.sha256(f"seed:{line.id}".encode()).hexdigest()[:8], 16)

    def take_key(self, line: Line, model: str) -> str:
        """The hash of everything that shapes the line's audio: cached until the line or the project changes (a
        clip changed on disk is noticed by its size and mtime)."""
        voice = self.clip_digest(self.voice_clip(line), "voice")
        emo = ""
        if line.emotion.mode == "audio" and line.emotion.audio is not None:
            emo = self.clip_digest(self._resolve(line.emotion.audio), "emotion")
        found = self._glossary_terms(line.text) if self._glossary_terms is not None else {}
        terms = json.dumps(found, sort_keys=True, ensure_ascii=False) if found else ""
        cached = self._keys.get(line.id)
        if cached is not None and cached[:4] == (model, voice, emo, terms):
            return cached[4]
        emotion = line.emotion.to_dict()
        if emo:
            emotion["audio"] = emo
        payload = {"v": KEY_VERSION, "text": line.text, "voice": voice, "emotion": emotion,
                   "settings": _changed_settings(self.effective_settings(line)), "model": model}
        if found:  # only then: takes of lines without glossary terms keep their keys
            payload["glossary"] = found
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        self._keys[line.id] = (model, voice, emo, terms, key)
        return key

    def use_glossary(self, terms: Callable[[str], Mapping[str, Any]] | None) -> None:
        """``terms(text)``: the glossary entries that apply to a text (``Engine.glossary_terms``); None: none."""
        with self.lock:
            self._glossary_terms = terms

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.folder / path

    def status(self, line: Line, model: str | None = None) -> Status:
        """``current``: the active take matches the line; ``locked`` lines are never rendered again."""
        if line.locked:
            return "locked"
        take = line.active_take
        model = model or self.model
        if take is not None and model is not None:
            try:
                if take.key == self.take_key(line, model):
                    return "current"
            except EngineError:
                pass
        if line.error:
            return "failed"
        return "stale" if take is not None else "pending"


_DEFAULTS = GenerationSettings().to_dict()


def _changed_settings(settings: GenerationSettings) -> dict[str, Any]:
    """The settings that differ from the defaults: a setting added in a later version (at its default) leaves
    every existing take current."""
    return {k: v for k, v in settings.to_dict().items() if k not in _DEFAULTS or v != _DEFAULTS[k]}


def check_text(text: str, where: str) -> str:
    """A line's text, stripped; an EngineError naming the line when nothing is left to say."""
    if not isinstance(text, str) or not text.strip():
        raise EngineError(f"{where} is empty; type something to say or remove the line.")
    return text.strip()
