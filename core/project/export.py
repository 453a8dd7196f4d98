"""Exports of a rendered project: one audio file (WAV, FLAC, MP3, Opus), an M4B audiobook with chapters,
subtitles (SRT, WebVTT) with the real start and end of every line, or per-line files with a CSV manifest.

The :func:`timeline` places every line: an untimed line follows the previous line and its pause; a timed line
(from subtitles) starts at its cue, or right after the previous line when that one ran over, and is padded
with silence to the end of its cue. Exporting selected chapters lays those chapters end to end, each with
its own timing. Audio is streamed take by take (a long book never sits in memory whole) into a temp file that
replaces the target in one rename.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..api import SAMPLE_RATE, Cancelled, EngineError, Progress
from ..audio_formats import FILE_FORMATS, FORMATS, AudioFormat, AudioWriter
from ..files import write_atomic
from .importers import srt_stamp
from .model import Chapter, Line, Project, Take

AUDIO_FORMATS = {FORMATS[name].extension: FORMATS[name] for name in FILE_FORMATS}  # one encoder for every writer
EXTENSIONS = (*AUDIO_FORMATS, ".m4b", ".srt", ".vtt", ".csv")
CHUNK = 1 << 16


@dataclass(frozen=True)
class Placed:
    """A line on the export's timeline (sample offsets at the takes' rate)."""

    line: Line
    index: int  # in the project
    take: Take
    path: Path
    start: int
    samples: int
    span: int  # samples the line occupies before its pause (a timed line is padded to its cue)
    pause: int

    @property
    def end(self) -> int:
        return self.start + self.samples


@dataclass(frozen=True)
class PlacedChapter:
    chapter: Chapter
    start: int
    end: int


@dataclass
class Timeline:
    lines: list[Placed] = field(default_factory=list)
    chapters: list[PlacedChapter] = field(default_factory=list)
    total: int = 0
    sample_rate: int = SAMPLE_RATE


def _samples(ms: int, rate: int) -> int:
    return int(round(ms * rate / 1000))


def unrendered(project: Project) -> list[Line]:
    """Lines an export cannot use: no take, or a take that no longer matches the line (locked lines keep theirs)."""
    return [line for line in project.lines if line.active_take is None
            or project.status(line) not in ("current", "locked")]


def timeline(project: Project, chapters: Sequence[int] | None = None) -> Timeline:
    """Where every line (of the chosen chapter indices, in project order) starts; an EngineError when a line has
    no usable take."""
    if not project.lines:
        raise EngineError(f"The project {project.folder} has no lines to export.")
    missing = unrendered(project)
    if missing:
        first = missing[0]
        why = f" ({first.error})" if first.error else ""
        raise EngineError(f"{len(missing)} of {len(project.lines)} lines have no current take (first: line {first.id}"
                          f"{why}). Render the project first (python main.py project render {project.folder}).")
    rates = {line.active_take.sample_rate for line in project.lines if line.active_take is not None}
    if len(rates) > 1:
        raise EngineError(f"The takes of {project.folder} have different sample rates ({sorted(rates)}); render the "
                          "project again with one model.")
    rate = rates.pop() if rates else SAMPLE_RATE
    full = _place_all(project, rate)
    all_chapters = project.chapters()
    bounds = [0] + [full.lines[c.first].start for c in all_chapters[1:]] + [full.total]
    placed_chapters = [PlacedChapter(c, bounds[k], bounds[k + 1]) for k, c in enumerate(all_chapters)]
    if chapters is None:
        full.chapters = placed_chapters
        return full
    return _select(full, placed_chapters, chapters)


def _place_all(project: Project, rate: int) -> Timeline:
    out = Timeline(sample_rate=rate)
    pos = 0
    for index, line in enumerate(project.lines):
        take = line.active_take
        assert take is not None
        start = pos
        span = take.samples
        if line.start_ms is not None and line.slot_ms is not None:
            start = max(pos, _samples(line.start_ms, rate))
            span = max(take.samples, _samples(line.slot_ms, rate))
        pause = _samples(line.pause_ms, rate)
        out.lines.append(Placed(line, index, take, project.folder / take.file, start, take.samples, span, pause))
        pos = start + span + pause
    out.total = pos
    return out


def _select(full: Timeline, chapters: list[PlacedChapter], wanted: Sequence[int]) -> Timeline:
    chosen = sorted(set(wanted))
    bad = [k for k in chosen if not 0 <= k < len(chapters)]
    if bad or not chosen:
        raise EngineError(f"No chapter {bad[0] + 1 if bad else ''} in the project: it has {len(chapters)} "
                          f"chapter(s), numbered from 1.")
    out = Timeline(sample_rate=full.sample_rate)
    pos = 0
    for k in chosen:
        pc = chapters[k]
        shift = pos - pc.start
        first, last = pc.chapter.first, pc.chapter.first + pc.chapter.count
        out.lines.extend(replace(p, start=p.start + shift) for p in full.lines[first:last])
        out.chapters.append(PlacedChapter(pc.chapter, pos, pc.end + shift))
        pos = pc.end + shift
    out.total = pos
    return out


# ------------------------------------------------------------------------------------------ audio stream


def _read_take(p: Placed) -> np.ndarray:
    import soundfile as sf

    try:
        audio, rate = sf.read(str(p.path), dtype="int16", always_2d=False)
    except (OSError, RuntimeError) as exc:
        raise EngineError(f"The take of line {p.line.id} ({p.path}) cannot be read: {exc}. Render the line "
                          "again.") from None
    if audio.ndim != 1 or len(audio) != p.samples or rate != p.take.sample_rate:
        raise EngineError(f"The take of line {p.line.id} ({p.path}) is not the one the project recorded "
                          f"({len(audio)} samples, {p.samples} expected). Render the line again.")
    return audio


def pcm_chunks(tl: Timeline, cancel: threading.Event | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> Iterator[np.ndarray]:
    """The export's audio as int16 chunks: silence and takes, exactly ``tl.total`` samples."""
    pos = 0
    for k, p in enumerate(tl.lines):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Export cancelled.")
        if p.start > pos:
            yield from _silence(p.start - pos)
        audio = _read_take(p)
        yield audio
        pos = p.start + len(audio)
        if on_progress:
            on_progress(Progress("Exporting", (k + 1) / max(len(tl.lines), 1), k + 1, len(tl.lines)))
    if tl.total > pos:
        yield from _silence(tl.total - pos)


def _silence(n: int) -> Iterator[np.ndarray]:
    while n > 0:
        k = min(n, CHUNK)
        yield np.zeros(k, dtype=np.int16)
        n -= k


def _write_soundfile(tmp: Path, fmt: AudioFormat, tl: Timeline, chunks: Iterator[np.ndarray]) -> None:
    with AudioWriter(tmp, fmt, tl.sample_rate) as out:  # Opus: resampled to its 48 kHz
        for chunk in chunks:
            out.write(chunk)


def _write_m4b(tmp: Path, project: Project, tl: Timeline, chunks: Iterator[np.ndarray]) -> None:
    """AAC in an MP4 (iPod) container, with the project's title/author and one chapter per chapter."""
    import av

    rate = tl.sample_rate
    with av.open(str(tmp), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        title = project.title or project.folder.name
        out.metadata.update({"title": title, "album": title, "artist": project.author, "album_artist": project.author,
                             "genre": "Audiobook"})
        out.set_chapters([{"id": k + 1, "start": c.start, "end": c.end, "time_base": Fraction(1, rate),
                           "metadata": {"title": c.chapter.title}} for k, c in enumerate(tl.chapters)])
        pts = 0
        for chunk in chunks:
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, pts
            pts += len(chunk)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# ------------------------------------------------------------------------------------------ text exports


def _seconds_ms(samples: int, rate: int) -> int:
    return int(round(samples * 1000 / rate))


def subtitles(tl: Timeline, kind: str) -> str:
    """SRT or WebVTT text with each line's real start and end (its speech, not its padding)."""
    rate = tl.sample_rate
    parts = [] if kind == "srt" else ["WEBVTT", ""]
    for n, p in enumerate(tl.lines, 1):
        a, b = srt_stamp(_seconds_ms(p.start, rate)), srt_stamp(_seconds_ms(p.end, rate))
        if kind == "srt":
            parts += [str(n), f"{a} --> {b}", " ".join(p.line.text.split()), ""]
        else:
            voice = re.sub(r"[<>]", "", p.line.speaker)
            parts += [f"{a.replace(',', '.')} --> {b.replace(',', '.')}", f"<v {voice}>{_vtt_text(p.line.text)}", ""]
    return "\n".join(parts)


def _vtt_text(text: str) -> str:
    return " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("-->", "->")


def _line_file(n: int, p: Placed) -> str:
    speaker = re.sub(r"[^\w.-]+", "_", Path(p.line.speaker).stem if Path(p.line.speaker).suffix else p.line.speaker)
    return f"{n:04d}_{p.line.id}_{speaker.strip('_') or 'line'}.wav"


def _manifest(tl: Timeline, folder_name: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "start", "end", "speaker", "text"])
    for n, p in enumerate(tl.lines, 1):
        writer.writerow([f"{folder_name}/{_line_file(n, p)}", f"{p.start / tl.sample_rate:.6f}",
                         f"{p.end / tl.sample_rate:.6f}", p.line.speaker, " ".join(p.line.text.split())])
    return buf.getvalue()


def _write_lines(out: Path, tl: Timeline, overwrite: bool, cancel: threading.Event | None) -> Path:
    """The per-line files into ``<name>_lines/`` (built in a temp folder, then renamed into place)."""
    folder = out.with_name(f"{out.stem}_lines")
    if folder.exists() and not overwrite:
        raise EngineError(f"{folder} already exists; choose another name or pass --overwrite.")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", suffix=".part", dir=out.parent))
    except OSError as exc:
        raise EngineError(f"Cannot write to {out.parent}: {exc.strerror or exc}.") from None
    try:
        for n, p in enumerate(tl.lines, 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Export cancelled.")
            shutil.copyfile(p.path, tmp / _line_file(n, p))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EngineError(f"Could not write the line files to {folder}: {exc.strerror or exc}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ------------------------------------------------------------------------------------------ entry point


@dataclass
class ExportReport:
    path: Path
    lines: int
    seconds: float  # of audio
    chapters: list[tuple[str, float]]  # (title, start in seconds)
    extra: Path | None = None  # the per-line folder of a CSV export


def export(project: Project, out: str | Path, *, chapters: Sequence[int] | None = None, overwrite: bool = False,
           cancel: threading.Event | None = None,
           on_progress: Callable[[Progress], None] | None = None) -> ExportReport:
    """Export the whole project, or the chapters with these indices (from 0), to ``out``; the format follows the
    extension (:data:`EXTENSIONS`)."""
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in EXTENSIONS:
        raise EngineError(f"Cannot export to {out.name}: use one of {', '.join(EXTENSIONS)}.")
    if out.exists() and not overwrite:
        raise EngineError(f"{out} already exists; choose another name or pass --overwrite.")
    with project.lock:
        tl = timeline(project, chapters)
    extra = None
    if ext in AUDIO_FORMATS or ext == ".m4b":
        def write(tmp: Path) -> None:
            chunks = pcm_chunks(tl, cancel, on_progress)
            if ext == ".m4b":
                _write_m4b(tmp, project, tl, chunks)
            else:
                _write_soundfile(tmp, AUDIO_FORMATS[ext], tl, chunks)
    else:
        if ext == ".csv":
            extra = _write_lines(out, tl, overwrite, cancel)
            text = _manifest(tl, extra.name)
        else:
            text = subtitles(tl, ext[1:])

        def write(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8", newline="\n")

    try:
        write_atomic(out, write, overwrite=overwrite)
    except EngineError:
        raise
    except (RuntimeError, ValueError, LookupError) as exc:  # libsndfile / FFmpeg refused the audio
        raise EngineError(f"Could not encode {out.name}: {exc}.") from exc
    chapter_list = [(c.chapter.title, c.start / tl.sample_rate) for c in tl.chapters]
    return ExportReport(out, len(tl.lines), tl.total / tl.sample_rate, chapter_list, extra)
