"""Projects at book size: import and table-refresh time for a 500 000-character book, and the render queue's
overhead per line beyond the engine's own time (tiny models, CPU).

    python bench/bench_project.py [--chars 500000] [--lines 12] [--big-lines 2000]

Prints: the import of the book (plain text and Markdown: parse, and the whole import with the first save), opening
it again, one table refresh (status with its take key, duration and overrun of every line; the first
computes every key, later ones reuse them), one edit (which saves project.json);
then the render of ``--lines`` lines on the tiny models, in a small project and in one of ``--big-lines`` lines
(project.json is saved after every line, so its size matters): seconds per line in the engine, the queue's own
seconds per line (key, durable take write, durable save, events) and that overhead as a share of the tiny
engine's time and of one second of synthesis (a real model takes seconds per line).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from core.api import GenerationSettings, SynthesisRequest  # noqa: E402
from core.project import Project  # noqa: E402
from core.project.importers import import_project, parse  # noqa: E402

WORDS = ("the river ran slow and brown past the mill while old Martha counted the sacks of grain and wondered "
         "whether the rain would come before the harvest was in").split()


def book(chars: int, markdown: bool) -> str:
    rng = random.Random(0)
    parts: list[str] = []
    size, chapter = 0, 0
    while size < chars:
        if markdown and len(parts) % 40 == 0:
            chapter += 1
            parts.append(f"# Chapter {chapter}")
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                     for _ in range(rng.randint(2, 6))]
        para = " ".join(sentences)
        # wrap like a text file: lines of about 72 characters inside a paragraph
        wrapped, line = [], ""
        for word in para.split():
            if len(line) + len(word) > 72:
                wrapped.append(line)
                line = ""
            line = f"{line} {word}".strip()
        wrapped.append(line)
        parts.append("\n".join(wrapped))
        size += len(para) + 2
    return "\n\n".join(parts)[:chars] + "\n"


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def bench_import(root: Path, chars: int, clip: Path) -> None:
    for fmt in ("text", "markdown"):
        text = book(chars, fmt == "markdown")
        src = root / f"book-{fmt}.{'md' if fmt == 'markdown' else 'txt'}"
        src.write_text(text, encoding="utf-8")
        found, t_parse = timed(lambda: parse(text, fmt))  # noqa: B023
        folder = root / f"book-{fmt}"
        project, t_import = timed(lambda: import_project(src, folder, fmt, default_voice=str(clip)))  # noqa: B023
        project.close()
        size = (folder / "project.json").stat().st_size
        project, t_open = timed(lambda: Project.open(folder))  # noqa: B023

        def refresh() -> int:
            rows = 0
            for line in project.lines:  # noqa: B023
                project.status(line, "bench-model")  # noqa: B023
                project.take_key(line, "bench-model")  # noqa: B023 - what status costs once a line has a take
                take = line.active_take
                _ = (take.duration if take else 0.0, line.overrun, line.speaker, line.text[:80])
                rows += 1
            return rows

        _, t_first = timed(refresh)
        _, t_refresh = timed(refresh)
        target = project.lines[len(project.lines) // 2].id
        _, t_edit = timed(lambda: project.set_text(target, "An edited paragraph."))  # noqa: B023
        print(f"{fmt:>8}: {len(text):,} chars -> {len(found.lines):,} lines, {len(project.chapters())} chapters; "
              f"parse {t_parse * 1000:.0f} ms, import+save {t_import * 1000:.0f} ms (project.json {size / 1e6:.1f} "
              f"MB), open {t_open * 1000:.0f} ms, table refresh {t_first * 1000:.0f} ms first / "
              f"{t_refresh * 1000:.0f} ms after, one edit+save {t_edit * 1000:.0f} ms")
        project.close()


def bench_render(root: Path, n: int, big: int, clip: Path) -> None:
    import torch
    from tiny_models import tiny_model_dir

    from core.engine import Engine
    from core.project.render import render

    torch.set_num_threads(1)
    engine = Engine(cache_dir=root / "voice_cache")
    engine.load(tiny_model_dir(), device="cpu")
    settings = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2)
    for total in (n, big):
        src = root / f"script-{total}.txt"
        src.write_text("".join(f"{'Alice' if i % 2 else 'Bob'}: Line number {i}.\n" for i in range(total)),
                       encoding="utf-8")
        folder = root / f"render-{total}"
        with import_project(src, folder, "script", voices={"Alice": str(clip), "Bob": str(clip)},
                            settings=settings) as project:
            render(project, engine, only=[project.lines[0].id])  # warm: voice conditioning cached
            only = [line.id for line in project.lines[1:n + 1]]
            requests = [SynthesisRequest(ln.text, project.voice_clip(ln), ln.emotion, project.effective_settings(ln))
                        for ln in project.lines[1:n + 1]]
            before = _alone(engine, requests)
            report = render(project, engine, only=only)
        alone = (before + _alone(engine, requests)) / 2  # before and after: the machine's drift evens out
        per_line = report.seconds / report.rendered
        overhead = per_line - alone
        inside = (report.seconds - report.engine_seconds) / report.rendered
        print(f"render, project of {total:,} lines: {report.rendered} lines, {per_line * 1000:.1f} ms/line through "
              f"the queue, {alone * 1000:.1f} ms/line engine alone: overhead {overhead * 1000:.2f} ms/line = "
              f"{overhead / alone * 100:.1f} % of the tiny engine's time, {overhead * 100:.2f} % of 1 s of synthesis "
              f"(queue time outside engine calls {inside * 1000:.2f} ms/line)")


def _alone(engine, requests: list[SynthesisRequest]) -> float:
    """Seconds per line for the same lines straight through the engine: its own time, no queue."""
    t = time.perf_counter()
    for request in requests:
        engine.synthesize(request)
    return (time.perf_counter() - t) / len(requests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=500_000)
    ap.add_argument("--lines", type=int, default=12)
    ap.add_argument("--big-lines", type=int, default=2000)
    a = ap.parse_args()
    from tiny_models import write_clip

    root = Path(tempfile.mkdtemp(prefix="bench-project-"))
    try:
        clip = write_clip(root / "voice.wav", 1.2, 170.0, seed=3)
        bench_import(root, a.chars, clip)
        bench_render(root, a.lines, a.big_lines, clip)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
