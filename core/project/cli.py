"""``python main.py project import|render|export|status``: projects from the command line.

Registered by ``core.cli`` (``add_parser(subparsers)``, ``run(args)``); errors are EngineErrors, which
``core.cli.run`` prints as one ``error:`` line.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from ..api import EngineError
from .importers import FORMATS
from .render import LineResult


def add_parser(subparsers: Any) -> None:
    from ..cli_options import _add_generation

    p = subparsers.add_parser("project", help="scripts, books and subtitles: import, render (resumable), export")
    sub = p.add_subparsers(dest="project_command", required=True)

    i = sub.add_parser("import", help="make a new project folder from a text, Markdown, script, SRT or VTT file")
    i.add_argument("source", help="the file to import")
    i.add_argument("--project", required=True, help="the new project folder (empty or not yet there)")
    i.add_argument("--format", choices=FORMATS, help="default: from the extension (.md markdown, .srt, .vtt, "
                                                     "otherwise plain text)")
    i.add_argument("--voice", action="append", default=[], metavar="NAME=CLIP",
                   help="the voice of a speaker: a clip or a voice-library name (repeat for each speaker)")
    i.add_argument("--default-voice", metavar="CLIP",
                   help="the voice (clip or voice-library name) of the narrator and of unmapped speakers")
    i.add_argument("--title", help="project title (default: the file name)")
    i.add_argument("--author", default="", help="author (M4B metadata)")
    i.add_argument("--pause-ms", type=int, help="pause after each untimed line (default 400)")
    _add_generation(i)
    i.set_defaults(stream=False)  # core.cli_options._settings reads synth's --stream; a project renders whole lines

    r = sub.add_parser("render", help="render every line without a current take (resumes after a crash)")
    r.add_argument("project", help="project folder")
    r.add_argument("--model-dir", help="model folder")
    r.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or mps")
    r.add_argument("--cache-dir", help="voice cache folder (default: the user cache folder)")
    r.add_argument("--line", action="append", metavar="ID", help="render only these lines (repeat)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("export", help="export the rendered project (.wav .flac .mp3 .opus .m4b .srt .vtt .csv)")
    e.add_argument("project", help="project folder")
    e.add_argument("--out", required=True, help="output file; the format follows the extension")
    e.add_argument("--chapters", help="only these chapters, numbered from 1 (e.g. 1,3)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output")

    s = sub.add_parser("status", help="list the lines with their speaker, status and duration")
    s.add_argument("project", help="project folder")


def run(args: argparse.Namespace) -> int:
    command = args.project_command
    if command == "import":
        return _import(args)
    if command == "render":
        return _render(args)
    if command == "export":
        return _export(args)
    return _status(args)


def _voices(pairs: list[str]) -> dict[str, str]:
    voices = {}
    for pair in pairs:
        name, sep, clip = pair.partition("=")
        if not sep or not name.strip() or not clip.strip():
            raise EngineError(f"--voice needs NAME=CLIP (a speaker name and its clip), got {pair!r}.")
        voices[name.strip()] = clip.strip()
    return voices


def _import(a: argparse.Namespace) -> int:
    from ..api import SettingError
    from ..cli_options import _settings, setting_message
    from .importers import import_project

    try:
        settings = _settings(a).validate()
    except SettingError as exc:
        raise EngineError(setting_message(exc)) from None
    project = import_project(Path(a.source), Path(a.project), a.format, voices=_voices(a.voice),
                             default_voice=a.default_voice, settings=settings, title=a.title, author=a.author,
                             pause_ms=a.pause_ms)
    with project:
        for note in project.notices:
            print(f"note: {note}", file=sys.stderr)
        speakers = sorted({line.speaker for line in project.lines})
        print(f"imported {len(project.lines)} lines ({len(project.chapters())} chapter(s); speakers: "
              f"{', '.join(speakers)}) into {project.folder}")
    return 0


def _open_for_writing(folder: str) -> Any:
    from .model import Project

    project = Project.open(folder)
    if project.read_only:
        message = project.notices[-1] if project.notices else f"The project {folder} is open read-only."
        project.close()
        raise EngineError(message)
    for note in project.notices:
        print(f"warning: {note}", file=sys.stderr)
    return project


def _render(a: argparse.Namespace) -> int:
    from .. import models
    from ..cli_options import _Bar, voice_cache_dir
    from .render import RenderProgress, render

    project = _open_for_writing(a.project)
    with project:
        model_dir = models.locate_model_dir(a.model_dir)
        from ..engine import Engine  # torch: only once the project is known to be usable

        engine = Engine(cache_dir=voice_cache_dir(a.cache_dir))
        bar = _Bar(quiet=a.quiet)
        engine.load(model_dir, device=a.device, on_progress=bar)
        bar.close()
        count = {"n": 0}

        def on_line(result: LineResult) -> None:
            count["n"] += 1
            where = f"[{count['n']}] line {result.line_id}"
            if result.outcome == "failed":
                print(f"{where} failed: {result.error}", flush=True)
                return
            assert result.take is not None
            over = f", {result.overrun:.2f} s over its cue" if result.overrun > 0 else ""
            print(f"{where}: take {result.take.n}, {result.take.duration:.2f} s of audio in "
                  f"{result.engine_seconds:.2f} s{over}", flush=True)

        tty = sys.stderr.isatty() and not a.quiet

        def on_progress(p: RenderProgress) -> None:
            if tty and p.line_id is not None:
                eta = f", {p.eta:.0f} s left" if p.eta is not None else ""
                sys.stderr.write(f"\r{p.done}/{p.total} lines ({p.fraction * 100:5.1f}%{eta}) {p.stage:<28.28}")
                sys.stderr.flush()

        report = render(project, engine, only=a.line, on_progress=on_progress, on_line=on_line,
                        cancel=threading.Event())
        if tty:
            sys.stderr.write("\n")
        rtf = f", RTF {report.engine_seconds / report.audio_seconds:.2f}" if report.audio_seconds else ""
        print(f"rendered {report.rendered} line(s), {report.current} already current, {report.locked} locked, "
              f"{len(report.failed)} failed ({report.audio_seconds:.1f} s of audio in {report.seconds:.1f} s{rtf})")
        for failed in report.failed:
            print(f"error: line {failed.line_id}: {failed.error}", file=sys.stderr)
    return 1 if report.failed else 0


def _export(a: argparse.Namespace) -> int:
    from .export import export
    from .model import Project

    chapters = None
    if a.chapters:
        try:
            chapters = [int(x) - 1 for x in a.chapters.replace(",", " ").split()]
        except ValueError:
            raise EngineError(f"--chapters takes chapter numbers such as 1,3; got {a.chapters!r}.") from None
    with Project.open(a.project, read_only=True) as project:
        report = export(project, a.out, chapters=chapters, overwrite=a.overwrite)
    extra = f" and {report.extra}" if report.extra else ""
    print(f"wrote {report.path}{extra}: {report.lines} lines, {report.seconds:.2f} s, "
          f"{len(report.chapters)} chapter(s)")
    return 0


def _status(a: argparse.Namespace) -> int:
    from .model import Project

    with Project.open(a.project, read_only=True) as project:
        for note in project.notices:
            print(f"warning: {note}", file=sys.stderr)
        counts: dict[str, int] = {}
        for line in project.lines:
            status = project.status(line)
            counts[status] = counts.get(status, 0) + 1
            take = line.active_take
            duration = f"{take.duration:6.2f} s" if take else "     -  "
            over = f"  over by {line.overrun:.2f} s" if line.overrun else ""
            print(f"{line.id}  {status:<8} {duration}  {line.speaker[:16]:<16} {line.text[:60]}{over}")
        print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0
