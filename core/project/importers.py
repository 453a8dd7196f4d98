"""Text into lines: plain text, Markdown, dialogue scripts, SRT and WebVTT subtitles.

Every importer reads its source in one pass (a 500 000-character book takes well under a second) and reports
all problems of a source in one :class:`ImportProblem` message (line or cue numbers, at most
:data:`MAX_LISTED` of them) instead of stopping at the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..api import EngineError, GenerationSettings
from .model import DEFAULT_PAUSE_MS, Line, Project

FORMATS = ("text", "markdown", "script", "srt", "vtt")
_BY_SUFFIX = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".srt": "srt",
              ".vtt": "vtt", ".script": "script"}
MAX_LISTED = 8
NARRATOR = "Narrator"


class ImportProblem(EngineError):
    """The source cannot be imported as it is; the message lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        listed = "; ".join(problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        super().__init__(f"{source}: {listed}{more}.")


@dataclass
class Imported:
    """What an importer found: the lines (ids not yet given) and the speaker names they use, in order."""

    lines: list[Line]
    speakers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def detect_format(path: Path, given: str | None = None) -> str:
    if given:
        if given not in FORMATS:
            raise EngineError(f"Unknown import format {given!r}; use one of {', '.join(FORMATS)}.")
        return given
    return _BY_SUFFIX.get(path.suffix.lower(), "text")


def read_source(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EngineError(f"The file to import, {path}, does not exist.") from None
    except UnicodeDecodeError as exc:
        raise EngineError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and import again.") \
            from None
    except OSError as exc:
        raise EngineError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse(text: str, fmt: str, source: str = "the text", *, speaker: str = NARRATOR) -> Imported:
    """The lines of ``text`` in format ``fmt`` (one of :data:`FORMATS`)."""
    parser = {"text": _plain, "markdown": _markdown, "script": _script, "srt": _srt, "vtt": _vtt}[fmt]
    found = parser(text, source, speaker)
    if not found.lines:
        raise EngineError(f"{source} has nothing to say: no lines found (format {fmt}).")
    return found


def resolve_speakers(found: Imported, voices: Mapping[str, str], default_voice: str | None,
                     source: str) -> dict[str, str]:
    """The voice map for the imported speakers: the given ``voices``, unknown names on ``default_voice``; without
    one, every unknown name is reported in one message."""
    unknown = [name for name in found.speakers if name not in voices]
    mapping = {name: voices[name] for name in found.speakers if name in voices}
    if unknown and default_voice is None:
        names = ", ".join(repr(n) for n in unknown)
        hint = " ".join(f"--voice {n}=clip.wav" for n in unknown[:3])
        raise EngineError(f"{source}: no voice for the speaker(s) {names}. Map each name to a clip ({hint}) "
                          "or pass --default-voice clip.wav.")
    for name in unknown:
        assert default_voice is not None
        mapping[name] = default_voice
        found.notes.append(f"speaker {name!r} uses the default voice")
    return mapping


# ------------------------------------------------------------------------------------------ prose


def _paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, paragraph with its lines joined by spaces) for every blank-line-separated block."""
    start, parts = 0, list[str]()
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if line:
            if not parts:
                start = number
            parts.append(line)
        elif parts:
            yield start, " ".join(parts)
            parts = []
    if parts:
        yield start, " ".join(parts)


def _plain(text: str, source: str, speaker: str) -> Imported:
    lines = [Line("", para, speaker) for _, para in _paragraphs(text)]
    return Imported(lines, [speaker] if lines else [])


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_HTML = re.compile(r"<[^>\n]+>")


def _md_inline(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    return _HTML.sub("", text).replace("\\", "")


def _markdown(text: str, source: str, speaker: str) -> Imported:
    """``#`` headings start chapters; paragraphs become lines; code blocks, rules and markup are dropped."""
    lines: list[Line] = []
    chapter: str | None = None
    block: list[str] = []
    fenced = False

    def flush() -> None:
        nonlocal chapter
        if block:
            said = _md_inline(" ".join(block)).strip()
            block.clear()
            if said:
                lines.append(Line("", said, speaker, chapter=chapter))
                chapter = None

    for raw in text.split("\n"):
        if _FENCE.match(raw):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = _HEADING.match(raw)
        stripped = raw.strip()
        if heading:
            flush()
            chapter = _md_inline(heading.group(2)).strip() or chapter
        elif not stripped or re.fullmatch(r"([-*_])\s*(\1\s*){2,}", stripped):
            flush()
        else:
            block.append(_BULLET.sub("", stripped.lstrip("> ").strip()))
    flush()
    return Imported(lines, [speaker] if lines else [])


# ------------------------------------------------------------------------------------------ scripts

_SCRIPT = re.compile(r"^(?:\[(?P<b>[^\]]+)\]\s*(?P<bt>.*)|(?P<n>[^\s:\[\]#][^:\[\]]{0,40}?)\s*:\s*(?P<nt>.*))$")


def _script(text: str, source: str, speaker: str) -> Imported:
    """``Name: text`` or ``[Name] text`` per line; ``# Title`` starts a chapter; a line without a name continues
    the previous speaker's line; blank lines separate nothing."""
    lines: list[Line] = []
    speakers: dict[str, None] = {}
    problems: list[str] = []
    chapter: str | None = None
    for number, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        heading = _HEADING.match(stripped)
        if heading:
            chapter = heading.group(2).strip() or chapter
            continue
        m = _SCRIPT.match(stripped)
        if m is None:
            if lines:
                lines[-1].text += " " + stripped
            else:
                problems.append(f"line {number} has no speaker ('Name: text' or '[Name] text')")
            continue
        name = (m.group("b") or m.group("n") or "").strip()
        said = (m.group("bt") if m.group("b") is not None else m.group("nt")) or ""
        if not name:
            problems.append(f"line {number} has an empty speaker name")
            continue
        if not said.strip():
            problems.append(f"line {number} ({name}) is empty")
            continue
        speakers.setdefault(name)
        lines.append(Line("", said.strip(), name, chapter=chapter))
        chapter = None
    if problems:
        raise ImportProblem(source, problems)
    return Imported(lines, list(speakers))


# ------------------------------------------------------------------------------------------ subtitles

_SRT_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})\s*-->\s*(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
                       r"(?:\s.*)?$")
_VTT_TIME = re.compile(r"^\s*((?:\d+:)?\d{1,2}:\d{1,2}\.\d{3})\s+-->\s+((?:\d+:)?\d{1,2}:\d{1,2}\.\d{3})(?:\s.*)?$")
_TAG = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")
_VOICE = re.compile(r"^<v(?:\.[^\s>]+)*\s+([^>]+)>")


@dataclass
class _Cue:
    number: int
    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


def _ms(h: str, m: str, s: str, frac: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(frac.ljust(3, "0"))


def _vtt_ms(stamp: str) -> int:
    parts = stamp.split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    sec, frac = parts[2].split(".")
    return _ms(parts[0], parts[1], sec, frac)


def _stamp(ms: int) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h:02d}:{m:02d}:{rest // 1000:02d},{rest % 1000:03d}"


def _blocks(text: str) -> Iterator[list[str]]:
    block: list[str] = []
    for raw in text.split("\n"):
        if raw.strip():
            block.append(raw.strip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def _srt_cues(text: str, problems: list[tuple[int, str]]) -> list[_Cue]:
    cues = []
    for ordinal, block in enumerate(_blocks(text), 1):
        number = int(block[0]) if block[0].isdigit() else ordinal
        timing = block[1] if block[0].isdigit() and len(block) > 1 else block[0]
        body = block[2:] if block[0].isdigit() else block[1:]
        m = _SRT_TIME.match(timing)
        if m is None:
            problems.append((number, f"cue {number} has no valid time line ('00:00:01,000 --> 00:00:02,500'); "
                                     f"found {timing[:40]!r}"))
            continue
        g = m.groups()
        cues.append(_Cue(number, _ms(*g[:4]), _ms(*g[4:]), " ".join(body)))
    return cues


def _vtt_cues(text: str, problems: list[tuple[int, str]]) -> list[_Cue]:
    blocks = list(_blocks(text))
    if not blocks or not blocks[0][0].startswith("WEBVTT"):
        problems.append((0, "the file does not start with WEBVTT"))
        return []
    cues = []
    for ordinal, block in enumerate(blocks[1:], 1):
        if block[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        timing_at = 0 if "-->" in block[0] else 1
        if timing_at >= len(block):
            problems.append((ordinal, f"cue {ordinal} has no time line ('00:01.000 --> 00:02.500')"))
            continue
        m = _VTT_TIME.match(block[timing_at])
        if m is None:
            problems.append((ordinal, f"cue {ordinal} has no valid time line ('00:01.000 --> 00:02.500'); "
                                      f"found {block[timing_at][:40]!r}"))
            continue
        body = " ".join(block[timing_at + 1:])
        voice = _VOICE.match(body)
        cues.append(_Cue(ordinal, _vtt_ms(m.group(1)), _vtt_ms(m.group(2)), body,
                         voice.group(1).strip() if voice else None))
    return cues


def _timed_lines(cues: list[_Cue], problems: list[tuple[int, str]], source: str, speaker: str) -> Imported:
    lines: list[Line] = []
    speakers: dict[str, None] = {}
    previous: _Cue | None = None
    for cue in cues:
        said = " ".join(_TAG.sub("", cue.text).split())
        if cue.end_ms <= cue.start_ms:
            problems.append((cue.number, f"cue {cue.number} ends ({_stamp(cue.end_ms)}) before it starts "
                                         f"({_stamp(cue.start_ms)})"))
        elif previous is not None and cue.start_ms < previous.end_ms:
            problems.append((cue.number, f"cue {cue.number} starts at {_stamp(cue.start_ms)}, before cue "
                                         f"{previous.number} ends ({_stamp(previous.end_ms)})"))
        elif not said:
            problems.append((cue.number, f"cue {cue.number} has no text"))
        else:
            who = cue.speaker or speaker
            speakers.setdefault(who)
            lines.append(Line("", said, who, pause_ms=0, start_ms=cue.start_ms, end_ms=cue.end_ms))
        previous = cue
    if problems:
        raise ImportProblem(source, [text for _, text in sorted(problems, key=lambda p: p[0])])
    return Imported(lines, list(speakers))


def _srt(text: str, source: str, speaker: str) -> Imported:
    problems: list[tuple[int, str]] = []
    return _timed_lines(_srt_cues(text, problems), problems, source, speaker)


def _vtt(text: str, source: str, speaker: str) -> Imported:
    problems: list[tuple[int, str]] = []
    return _timed_lines(_vtt_cues(text, problems), problems, source, speaker)


def voice_clip(name: str, ref: str) -> str:
    """A clip path as given, or the clip of the voice-library voice named ``ref``."""
    if Path(ref).is_file():
        return ref
    from ..dirs import library_folder
    from ..voices import read_library

    found = next((v for v in read_library(library_folder()) if v.name == ref), None)
    if found is None:
        raise EngineError(f"The voice clip for {name}, {ref}, does not exist, and the voice library has no voice "
                          "of that name.")
    return str(found.clip)


def import_project(source: Path, folder: Path, fmt: str | None = None, *, voices: Mapping[str, str] | None = None,
                   default_voice: str | None = None, settings: GenerationSettings | None = None,
                   title: str | None = None, author: str = "", pause_ms: int | None = None) -> Project:
    """A new project in ``folder`` from the file ``source``. ``voices`` maps speaker names to clip paths or
    voice-library names; the clips must exist (stored as resolved paths)."""
    fmt = detect_format(source, fmt)
    voices = {name: voice_clip(name, ref) for name, ref in (voices or {}).items()}
    if default_voice:
        default_voice = voice_clip("--default-voice", default_voice)
    single = next(iter(voices)) if len(voices) == 1 and fmt != "script" else NARRATOR
    found = parse(read_source(source), fmt, str(source), speaker=single)
    mapping = resolve_speakers(found, voices, default_voice, str(source))
    mapping = {name: str(Path(clip).resolve()) for name, clip in mapping.items()}
    if pause_ms is not None and not 0 <= pause_ms <= 600_000:
        raise EngineError(f"The pause after a line is 0 to 600000 ms (got {pause_ms}).")
    for n, line in enumerate(found.lines, 1):
        line.id = f"{n:05d}"
        if pause_ms is not None and not line.timed:
            line.pause_ms = pause_ms
    project = Project.create(folder, found.lines, title=title if title is not None else source.stem,
                             author=author, voices=mapping, settings=settings, next_id=len(found.lines) + 1)
    project.notices.extend(found.notes)
    return project


def srt_stamp(ms: int) -> str:
    """``HH:MM:SS,mmm`` (the exporter writes the same times the importer reads)."""
    return _stamp(ms)


__all__ = ["DEFAULT_PAUSE_MS", "FORMATS", "ImportProblem", "Imported", "NARRATOR", "detect_format", "parse",
           "import_project", "read_source", "resolve_speakers", "srt_stamp"]
