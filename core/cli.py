"""Command line: ``python main.py synth|models|device ...`` (no GUI imports)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from .api import (
    EMOTION_NAMES,
    SAMPLE_RATE,
    AudioChunk,
    Emotion,
    EngineError,
    GenerationSettings,
    ModelLimits,
    Progress,
    SettingError,
    SynthesisRequest,
    SynthesisResult,
)
from .audio_formats import AudioWriter, format_for, write_audio
from .cli_options import FLAGS, _add_generation, _Bar, _settings, setting_message, voice_cache_dir  # noqa: F401
from .files import check_writable, write_atomic, write_wav_atomic  # noqa: F401 - also used from core.cli

log = logging.getLogger("core.cli")


def _emotion(a: argparse.Namespace) -> Emotion:
    chosen = [x for x in (a.emo_audio, a.emo_vector, a.emo_text is not None, a.emo_random) if x]
    if len(chosen) > 1 and not (a.emo_random and a.emo_vector):
        raise EngineError("Choose one emotion option: --emo-audio, --emo-vector (optionally with --emo-random) "
                          "or --emo-text.")
    if a.emo_audio:
        if not Path(a.emo_audio).is_file():
            raise EngineError(f"Emotion clip not found: {a.emo_audio}.")
        return Emotion("audio", audio=Path(a.emo_audio), alpha=a.emo_alpha)
    if a.emo_vector:
        try:
            values = tuple(float(x) for x in a.emo_vector.replace(",", " ").split())
        except ValueError:
            names = ", ".join(EMOTION_NAMES)
            raise EngineError(f"--emo-vector needs 8 numbers ({names}), got {a.emo_vector!r}.") from None
        return Emotion("vector", vector=values, alpha=a.emo_alpha, random=a.emo_random)
    if a.emo_text is not None:
        return Emotion("text", text=a.emo_text, alpha=a.emo_alpha)
    if a.emo_random:
        raise EngineError("--emo-random needs --emo-vector (it picks the speaker-matrix rows at random).")
    return Emotion("speaker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="IndexTTS2 Desktop command line")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="speak text in a cloned voice")
    s.add_argument("--text", help="text to speak (or --text-file)")
    s.add_argument("--text-file", help="UTF-8 text file to speak")
    s.add_argument("--voice", help="reference clip of the voice to clone")
    s.add_argument("--out", help="output file: .wav, .flac, .mp3 or .opus (the extension picks the format)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--batch", help="JSONL file: one job per line with text, voice, out and optional emotion keys")
    s.add_argument("--emo-audio", help="emotion reference clip")
    s.add_argument("--emo-alpha", type=float, default=1.0, help="emotion strength 0..1")
    s.add_argument("--emo-vector", help=f"8 weights: {', '.join(EMOTION_NAMES)}")
    s.add_argument("--emo-text", help="describe the emotion in words ('' = use the text itself)")
    s.add_argument("--emo-random", action="store_true", help="with --emo-vector: pick speaker-matrix rows at random")
    s.add_argument("--model-dir", help="model folder")
    s.add_argument("--model", choices=("2.0", "2.5"), help="IndexTTS version: 2.0 in the model folder, 2.5 in its "
                   "IndexTTS-2.5 subfolder (default: the model folder's own, told by its files)")
    s.add_argument("--cache-dir", help="voice cache folder (default: the user cache folder)")
    s.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or mps")
    precision = s.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="fp16", action="store_const", const=True, default=None,
                           help="half-precision GPT on CUDA (the default on an NVIDIA GPU)")
    precision.add_argument("--fp32", dest="fp16", action="store_const", const=False,
                           help="full-precision GPT on CUDA too")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--stream", action="store_true",
                   help="render each segment in chunks while it is decoded and write the WAV as it renders (first "
                        "audio much sooner; the file appears under --out when complete). Decodes with one beam "
                        "(--num-beams is ignored) and crossfades the chunks, so it sounds slightly different")
    _add_generation(s)

    m = sub.add_parser("models", help="check or download the model files")
    m.add_argument("action", choices=("check", "download"))
    m.add_argument("--dir", help="model folder")
    m.add_argument("--model", choices=("2.0", "2.5"), default="2.0",
                   help="which IndexTTS: 2.5 goes into the IndexTTS-2.5 subfolder and shares 2.0's helper models")
    m.add_argument("--source", choices=("hf", "modelscope"), default="hf")
    m.add_argument("--verify", action="store_true", help="check: also compare SHA-256 of every file with a known hash")
    m.add_argument("--no-qwen", action="store_true", help="skip the optional emotion-from-text model")
    m.add_argument("--quiet", action="store_true")

    d = sub.add_parser("device", help="run a real test operation on the device inference would use")
    d.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or mps")

    from .project.cli import add_parser as add_project_parser

    add_project_parser(sub)

    from .server.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    return parser


def run(argv: list[str]) -> int:
    # Warnings reach the user once, as "warning:" lines from the result; INDEXTTS_LOG=INFO shows the engine's log.
    logging.basicConfig(level=os.environ.get("INDEXTTS_LOG", "ERROR"), format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "synth":
            return _synth(args)
        if args.command == "models":
            return _models(args)
        if args.command == "project":
            from .project.cli import run as run_project

            return run_project(args)
        if args.command == "serve":
            from .server.cli import run as run_serve

            return run_serve(args)
        if args.command == "device":
            from .device import device_report

            ok, text = device_report(args.device)
            print(text)
            return 0 if ok else 1
    except SettingError as exc:
        print("error: " + setting_message(exc), file=sys.stderr)
        return 2
    except EngineError as exc:
        print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: keep the traceback, say where it is
        where = _log_internal_error(exc, argv)
        print(f"internal error: {type(exc).__name__}: {' '.join(str(exc).splitlines())[:300]}. This is a bug in "
              f"IndexTTS2 Desktop; the details are in {where}.", file=sys.stderr)
        return 3
    return 2


def _log_internal_error(exc: BaseException, argv: list[str]) -> Path:
    """Append the traceback of an unexpected error to the command-line log; its path."""
    import traceback

    from platformdirs import user_log_dir

    from .models import APP_NAME

    path = Path(os.environ.get("INDEXTTS_LOG_DIR") or user_log_dir(APP_NAME, appauthor=False)) / "cli.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} main.py {' '.join(argv)}\n")
            fh.write("".join(traceback.format_exception(exc)))
    except OSError:
        log.exception("internal error (the log %s could not be written)", path)
    return path


def _models(a: argparse.Namespace) -> int:
    from . import models

    parts = models.version_parts(models.locate_model_dir(a.dir), a.model)
    model_dir = parts[-1][0]
    download = f"python main.py models download{' --model 2.5' if a.model == '2.5' else ''}"
    if a.action == "check":
        statuses = [st for folder, manifest in parts
                    for st in models.check(folder, verify=a.verify, manifest=manifest)]
        bad = models.problems(statuses)
        if not a.quiet:
            print(f"Model folder: {model_dir}")
            for st in statuses:
                print("  " + models.describe(st))
            print("All required model files are present." if not bad else
                  f"{len(bad)} required file(s) missing or damaged: run '{download}'.")
        return 0 if not bad else 1
    bar = _Bar(quiet=a.quiet)
    totals: dict[str, tuple[int, int | None]] = {}

    def on_bytes(name: str, done: int, total: int | None) -> None:
        totals[name] = (done, total)
        frac = done / total if total else 0.0
        bar(Progress(f"{name} {done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB", frac))

    def on_file(i: int, n: int, item) -> None:
        if not a.quiet:
            sys.stderr.write(f"\n[{i + 1}/{n}] {item.local} ({item.what})\n")

    statuses = []
    try:
        for folder, manifest in parts:
            statuses += models.download(folder, source=a.source, include_optional=not a.no_qwen, on_bytes=on_bytes,
                                        on_file=on_file, manifest=manifest)
    except models.ModelSetupError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    bad = models.problems(statuses, include_optional=not a.no_qwen)
    print(f"Model folder: {model_dir}: " + ("ready." if not bad else f"{len(bad)} file(s) still missing."))
    return 0 if not bad else 1


def _jobs(a: argparse.Namespace, settings: GenerationSettings) -> list[tuple[SynthesisRequest, Path, bool, str]]:
    """``(request, out, overwrite, where)`` per job; ``where`` prefixes its error messages."""
    if a.batch:
        path = Path(a.batch)
        if not path.is_file():
            raise EngineError(f"Batch file not found: {path}.")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineError(f"Cannot read the batch file {path}: {exc}.") from None
        jobs = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path} line {n}: "
            try:
                d = json.loads(line)
                emo = Emotion.from_dict(d.get("emotion") or {})
                job_settings = GenerationSettings.from_dict({**settings.to_dict(), **(d.get("settings") or {})})
                request = SynthesisRequest(d["text"], d.get("voice") or a.voice or "", emo, job_settings)
                jobs.append((request, Path(d["out"]), bool(d.get("overwrite", a.overwrite)), where))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise EngineError(f"{where}needs a JSON object with 'text' and 'out' ({exc}).") from None
            except EngineError as exc:
                raise EngineError(where + str(exc)) from None
        if not jobs:
            raise EngineError(f"The batch file {path} has no jobs.")
        return jobs
    text = a.text
    if a.text_file:
        try:
            text = Path(a.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineError(f"Cannot read text file {a.text_file}: {exc}.") from None
    if text is None or not text.strip():
        raise EngineError("The text is empty: pass --text \"...\" or --text-file.")
    if not a.out:
        raise EngineError("Pass --out file.wav for the result.")
    if not a.voice:
        raise EngineError("Pass --voice clip.wav: the voice to clone.")
    return [(SynthesisRequest(text, a.voice, _emotion(a), settings), Path(a.out), a.overwrite, "")]


def _limits(model_dir: Path) -> ModelLimits | None:
    """The model's limits from its config.yaml (torch-free), None when it cannot be read (the load says why)."""
    from .config import ConfigError, load_config
    from .models import is_v25_dir

    try:
        limits = load_config(model_dir / "config.yaml").limits()
    except (ConfigError, OSError):
        return None
    return limits.as_v25() if is_v25_dir(model_dir) else limits


def _synth_model_dir(a: argparse.Namespace) -> Path:
    """The folder of the version ``--model`` names (default: the model folder's own), or a one-line EngineError."""
    from . import models

    base = models.locate_model_dir(a.model_dir)
    if a.model is None:
        return base
    folder = models.version_dir(base, a.model)
    if a.model == "2.0" and models.is_v25_dir(folder):
        raise EngineError(f"{folder} holds IndexTTS-2.5, not 2.0: pass --model 2.5 or the IndexTTS-2 model folder.")
    if a.model == "2.5" and not models.is_v25_dir(folder):
        raise EngineError(f"IndexTTS-2.5 is not installed in {folder} (no codec.pth): run 'python main.py models "
                          "download --model 2.5' or pass its folder with --model-dir.")
    return folder


def _language_tokens(jobs: list[tuple[SynthesisRequest, Path, bool, str]]) -> list[tuple[SynthesisRequest, Path, bool,
                                                                                         str]]:
    """IndexTTS-2.5 without --max-text-tokens: each job's tokens per segment by its language (upstream #775) unless
    its batch line sets another number than the default."""
    from .text.v25 import default_segment_tokens, guess_language

    out = []
    for request, path, overwrite, where in jobs:
        if request.settings.max_text_tokens_per_segment == GenerationSettings.max_text_tokens_per_segment:
            lang = request.settings.lang or guess_language(request.text)
            request = request.with_settings(max_text_tokens_per_segment=default_segment_tokens(lang))
        out.append((request, path, overwrite, where))
    return out


def _synth(a: argparse.Namespace) -> int:
    model_dir = _synth_model_dir(a)
    limits = _limits(model_dir)
    jobs = _jobs(a, _settings(a))
    if limits is not None and limits.version == "2.5" and a.max_text_tokens is None:
        jobs = _language_tokens(jobs)
    for request, out, overwrite, where in jobs:  # every job is checked before the models load
        try:
            request.validate(limits)
        except SettingError as exc:
            raise EngineError(setting_message(exc, where)) from None
        except EngineError as exc:
            raise EngineError(where + str(exc)) from None
        if out.exists() and not overwrite:
            raise EngineError(f"{where}{out} already exists; choose another name or pass --overwrite.")
        try:
            format_for(out)
        except EngineError as exc:
            raise EngineError(where + str(exc)) from None
        folder = out.resolve().parent
        if not folder.is_dir():
            raise EngineError(f"{where}Output folder {folder} does not exist.")
        check_writable(folder)
    from .engine import Engine  # torch: only once the input is known to be usable

    engine = Engine(cache_dir=voice_cache_dir(a.cache_dir))
    bar = _Bar(quiet=a.quiet)
    engine.load(model_dir, device=a.device, fp16=a.fp16, on_progress=bar)
    cancel = threading.Event()
    for request, out, overwrite, where in jobs:
        try:
            if a.stream:
                result = _synth_streamed(engine, request, out, overwrite, bar, cancel)
            else:
                result = engine.synthesize(request, on_progress=bar, cancel=cancel)
        except SettingError as exc:
            raise EngineError(setting_message(exc, where)) from None
        bar.close()
        for w in result.warnings:
            print(f"warning: {where}{w}", file=sys.stderr)
        if not a.stream:
            write_audio(out, result.audio, result.sample_rate, overwrite=overwrite)
        if not a.quiet:
            first = f" (first audio after {result.timings['first_audio']:.1f} s)" if a.stream else ""
            print(f"wrote {out}: {result.duration:.2f} s of audio in {result.timings.get('total', 0):.1f} s{first}")
    return 0


def _synth_streamed(engine, request: SynthesisRequest, out: Path, overwrite: bool, bar: _Bar,
                    cancel: threading.Event) -> SynthesisResult:
    """``synth --stream``: each chunk is appended to a temporary WAV next to ``out`` as soon as it is final; when
    the synthesis ends its header is completed and it is renamed to ``out`` (write_atomic). On any failure the
    temporary file is removed, so nothing half-written ever stands under ``out``."""
    results: list[SynthesisResult] = []

    def write(tmp: Path) -> None:
        with AudioWriter(tmp, format_for(out), SAMPLE_RATE) as audio_file:
            def on_chunk(chunk: AudioChunk) -> None:
                audio_file.write(chunk.audio)

            results.append(engine.synthesize(request, on_progress=bar, cancel=cancel, on_chunk=on_chunk))

    write_atomic(out, write, overwrite=overwrite)
    return results[0]
