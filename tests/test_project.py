"""Projects end to end on the tiny models: a two-speaker script imported, rendered and exported to every format
through ``python main.py project``; a render killed with SIGKILL and resumed; edits that render exactly the lines
they touched; takes, locks, timed subtitle lines, events and cancel through the Python API a GUI uses."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from project_helpers import (
    FAST,
    REPO,
    SCRIPT,
    SR,
    active,
    cli,
    engine_fixture,  # noqa: F401 - the engine fixture
    env,
    expected_starts,
    read_json,
    render_args,
    take_audio,
    work_fixture,  # noqa: F401 - the work fixture
)
from tiny_models import single_thread, write_clip  # noqa: F401 - fixture

from core.api import Emotion, EngineError, GenerationSettings
from core.engine import Engine
from core.project import Project, ProjectEvent
from core.project.export import export
from core.project.importers import import_project
from core.project.render import RenderProgress, render

SETTINGS = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2)


def new_project(work: Path, folder: Path, text: str = SCRIPT, fmt: str = "script", **kw) -> Project:
    src = folder.with_suffix(".src")
    src.write_text(text, encoding="utf-8")
    voices = {"Alice": str(work / "alice.wav"), "Bob": str(work / "bob.wav")}
    return import_project(src, folder, fmt, voices=voices, settings=SETTINGS, **kw)


def import_script(work: Path, name: str) -> Path:
    project = work / name
    run = cli(work, "import", "script.txt", "--format", "script", "--project", str(project), "--voice",
              "Alice=alice.wav", "--voice", "Bob=bob.wav", "--title", "The Book", "--author", "A. Writer", *FAST)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"imported 6 lines (2 chapter(s); speakers: Alice, Bob) into {project}"
    return project


# ------------------------------------------------------------------------------------ every export format


@pytest.fixture(scope="module")
def rendered(work: Path) -> Path:
    project = import_script(work, "book")
    run = cli(work, *render_args(project, work))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("rendered 6 line(s), 0 already current, 0 locked, 0 failed")
    return project


def test_script_import_maps_speakers_and_chapters(rendered: Path, work: Path) -> None:
    data = read_json(rendered)
    assert data["schema_version"] == 1 and data["title"] == "The Book" and data["author"] == "A. Writer"
    assert data["voices"] == {"Alice": str((work / "alice.wav").resolve()), "Bob": str((work / "bob.wav").resolve())}
    got = [(ln["speaker"], ln["text"], ln.get("chapter")) for ln in data["lines"]]
    assert got == [("Alice", "Hello there, Bob.", "The Meeting"), ("Bob", "Hi Alice. Good to see you.", None),
                   ("Alice", "Shall we begin?", None), ("Bob", "Yes. First the map.", "The Plan"),
                   ("Alice", "Then the boat.", None), ("Bob", "And then we wait.", None)]
    for line in data["lines"]:
        take = active(line)
        assert take["file"] == f"takes/{line['id']}-1.wav"
        assert len(take_audio(rendered, line)) == take["samples"] > 0


def test_render_again_renders_nothing(rendered: Path, work: Path) -> None:
    run = cli(work, *render_args(rendered, work))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == [
        "rendered 0 line(s), 6 already current, 0 locked, 0 failed (0.0 s of audio in "
        + run.stdout.split(" in ")[-1].strip()]


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "opus"])
def test_audio_exports_have_the_expected_length(rendered: Path, work: Path, ext: str) -> None:
    out = work / f"book.{ext}"
    run = cli(work, "export", str(rendered), "--out", str(out))
    assert run.returncode == 0, run.stderr
    starts, total = expected_starts(rendered)
    lines = read_json(rendered)["lines"]
    assert total == sum(active(ln)["samples"] for ln in lines) + sum(round(ln["pause_ms"] * SR / 1000) for ln in lines)
    audio, sr = sf.read(str(out), dtype="int16")
    if ext == "opus":
        assert sr == 48000 and abs(len(audio) - total * 48000 / SR) <= 1
        return
    assert sr == SR and abs(len(audio) - total) <= 1
    if ext in ("wav", "flac"):  # lossless: every take at its offset, silence between
        expected = np.zeros(total, dtype=np.int16)
        for start, line in zip(starts, lines):
            take = take_audio(rendered, line)
            expected[start:start + len(take)] = take
        np.testing.assert_array_equal(audio, expected)
    assert not [p.name for p in work.iterdir() if p.name.endswith(".part")]


def m4b_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(audio=0) if p.pts is not None]
        return packets[-1].pts + packets[-1].duration  # the playable end (priming and padding trimmed)


def test_m4b_has_chapters_and_metadata(rendered: Path, work: Path) -> None:
    out = work / "book.m4b"
    run = cli(work, "export", str(rendered), "--out", str(out))
    assert run.returncode == 0, run.stderr
    starts, total = expected_starts(rendered)
    assert abs(m4b_samples(out) - total) <= 1
    lines = read_json(rendered)["lines"]
    titled = [(ln["chapter"], starts[i]) for i, ln in enumerate(lines) if ln.get("chapter")]
    with av.open(str(out)) as c:
        assert c.metadata["title"] == "The Book" and c.metadata["artist"] == "A. Writer"
        chapters = c.chapters()
        assert [ch["metadata"]["title"] for ch in chapters] == [t for t, _ in titled] == ["The Meeting", "The Plan"]
        for ch, (_, start) in zip(chapters, titled):
            seconds = float(ch["start"] * ch["time_base"])
            assert abs(seconds - start / SR) <= 0.0005 + 1e-9, (seconds, start / SR)  # the container stores ms
        assert abs(float(chapters[-1]["end"] * chapters[-1]["time_base"]) - total / SR) <= 0.0005 + 1e-9
        frames = sum(f.samples for f in c.decode(audio=0))
        assert frames >= total  # decodable to the end


def parse_times(text: str, sep: str) -> list[tuple[int, int, str]]:
    cues = []
    blocks = [b.splitlines() for b in text.strip().split("\n\n")]
    for block in blocks:
        timing = next((x for x in block if "-->" in x), None)
        if timing is None:
            continue
        a, b = (s.strip() for s in timing.split("-->"))

        def ms(stamp: str) -> int:
            hms, frac = stamp.split(sep)
            h, m, s = (int(x) for x in hms.split(":"))
            return ((h * 60 + m) * 60 + s) * 1000 + int(frac)

        cues.append((ms(a), ms(b), block[block.index(timing) + 1]))
    return cues


@pytest.mark.parametrize("ext, sep", [("srt", ","), ("vtt", ".")])
def test_subtitles_carry_the_sample_offsets(rendered: Path, work: Path, ext: str, sep: str) -> None:
    out = work / f"book.{ext}"
    run = cli(work, "export", str(rendered), "--out", str(out))
    assert run.returncode == 0, run.stderr
    text = out.read_text(encoding="utf-8")
    if ext == "vtt":
        assert text.startswith("WEBVTT\n")
    starts, _ = expected_starts(rendered)
    lines = read_json(rendered)["lines"]
    cues = parse_times(text, sep)
    assert len(cues) == len(lines)
    for (a, b, said), start, line in zip(cues, starts, lines):
        assert a == round(start * 1000 / SR)
        assert b == round((start + active(line)["samples"]) * 1000 / SR)
        assert said == (line["text"] if ext == "srt" else f"<v {line['speaker']}>{line['text']}")


def test_csv_manifest_and_line_files(rendered: Path, work: Path) -> None:
    out = work / "book.csv"
    run = cli(work, "export", str(rendered), "--out", str(out))
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    lines = read_json(rendered)["lines"]
    starts, _ = expected_starts(rendered)
    assert [r["speaker"] for r in rows] == [ln["speaker"] for ln in lines]
    assert [r["text"] for r in rows] == [ln["text"] for ln in lines]
    for row, start, line in zip(rows, starts, lines):
        assert abs(float(row["start"]) - start / SR) < 1e-6
        assert abs(float(row["end"]) - (start + active(line)["samples"]) / SR) < 1e-6
        audio, _ = sf.read(str(work / row["file"]), dtype="int16")
        np.testing.assert_array_equal(audio, take_audio(rendered, line))
    # an existing export is never replaced silently
    again = cli(work, "export", str(rendered), "--out", str(out))
    assert again.returncode == 2 and again.stderr.strip() == f"error: {out} already exists; choose another name or " \
                                                              "pass --overwrite."


def test_selected_chapter_export(rendered: Path, work: Path) -> None:
    out = work / "plan.wav"
    run = cli(work, "export", str(rendered), "--out", str(out), "--chapters", "2")
    assert run.returncode == 0, run.stderr
    starts, total = expected_starts(rendered)
    audio, _ = sf.read(str(out), dtype="int16")
    assert len(audio) == total - starts[3]  # chapter 2 runs from line 4 to the end
    lines = read_json(rendered)["lines"]
    first = take_audio(rendered, lines[3])
    np.testing.assert_array_equal(audio[:len(first)], first)


# ------------------------------------------------------------------------------------ crash and resume


def test_sigkill_mid_render_resumes_and_matches_uninterrupted(work: Path, engine: Engine) -> None:
    script = "\n".join(f"{'Alice' if i % 2 else 'Bob'}: Line number {i}." for i in range(1, 21)) + "\n"
    (work / "long.txt").write_text(script, encoding="utf-8")
    project = work / "killed"
    run = cli(work, "import", "long.txt", "--format", "script", "--project", str(project), "--voice",
              "Alice=alice.wav", "--voice", "Bob=bob.wav", "--greedy", "--max-mel-tokens", "8", "--diffusion-steps",
              "12")
    assert run.returncode == 0, run.stderr
    reference = work / "uninterrupted"
    shutil.copytree(project, reference, ignore=shutil.ignore_patterns(".project.lock"))

    cmd = [sys.executable, str(REPO / "main.py"), "project", *render_args(project, work)]
    proc = subprocess.Popen(cmd, cwd=work, env=env(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = 0
    for out_line in proc.stdout:
        if ": take 1," in out_line:
            seen += 1
            if seen == 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    data = read_json(project)
    done = [ln for ln in data["lines"] if ln.get("takes")]
    assert 3 <= len(done) < 20, len(done)
    first_takes = {}
    for line in done:  # every take the project names is complete
        assert len(take_audio(project, line)) == active(line)["samples"]
        first_takes[line["id"]] = (project / active(line)["file"]).read_bytes()

    again = cli(work, *render_args(project, work))
    assert again.returncode == 0, again.stderr
    summary = again.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"rendered {20 - len(done)} line(s), {len(done)} already current, 0 locked, 0 failed")
    data = read_json(project)
    assert all(len(ln["takes"]) == 1 for ln in data["lines"])
    for line_id, content in first_takes.items():
        assert (project / f"takes/{line_id}-1.wav").read_bytes() == content, "finished lines are not rendered again"

    with Project.open(reference) as ref:
        report = render(ref, engine)
        assert report.rendered == 20 and not report.failed
    with Project.open(project, read_only=True) as resumed, Project.open(reference, read_only=True) as ref:
        export(resumed, work / "resumed.wav")
        export(ref, work / "reference.wav")
    a, _ = sf.read(str(work / "resumed.wav"), dtype="int16")
    b, _ = sf.read(str(work / "reference.wav"), dtype="int16")
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ the API a GUI drives


def test_edit_one_line_renders_exactly_that_line(work: Path, engine: Engine, tmp_path: Path) -> None:
    with new_project(work, tmp_path / "p") as project:
        events: list[ProjectEvent] = []
        project.subscribe(events.append)
        first = render(project, engine)
        assert (first.rendered, first.current) == (6, 0)
        assert sorted(e.ids[0] for e in events if e.kind == "status") == [ln.id for ln in project.lines]
        before = {ln.id: (project.folder / ln.active_take.file).stat().st_mtime_ns for ln in project.lines}
        target = project.lines[2]
        events.clear()
        project.set_text(target.id, "Shall we start now?")
        assert events == [ProjectEvent("lines", (target.id,))]
        assert [project.status(ln) for ln in project.lines].count("stale") == 1
        assert project.status(target) == "stale"
        lines_done: list[str] = []
        second = render(project, engine, on_line=lambda r: lines_done.append(r.line_id))
        assert (second.rendered, second.current, lines_done) == (1, 5, [target.id])
        assert [t.n for t in target.takes] == [1, 2] and target.active == 2
        after = {ln.id: (project.folder / ln.active_take.file).stat().st_mtime_ns for ln in project.lines}
        assert {k for k in before if before[k] != after[k]} == {target.id}
        # reopened from disk, the same state
        project.close()
        with Project.open(project.folder) as again:
            assert [again.status(ln) for ln in again.lines] == ["current"] * 6
            assert render(again, engine).rendered == 0


def test_regenerate_choose_take_lock_and_prune(work: Path, engine: Engine, tmp_path: Path) -> None:
    with new_project(work, tmp_path / "p") as project:
        project.max_takes = 2
        render(project, engine)
        line = project.lines[0]
        project.regenerate([line.id])
        assert render(project, engine).rendered == 1
        assert [t.n for t in line.takes] == [1, 2] and line.active == 2
        assert line.takes[0].seed != line.takes[1].seed
        project.choose_take(line.id, 1)
        assert project.status(line) == "current" and line.active == 1
        assert render(project, engine).rendered == 0
        project.regenerate([line.id])
        render(project, engine)  # take 3 becomes active; take 1, the oldest inactive one, is dropped
        assert [t.n for t in line.takes] == [2, 3] and line.active == 3
        kept = {t.file for t in line.takes}
        on_disk = {f"takes/{p.name}" for p in (project.folder / "takes").glob(f"{line.id}-*.wav")}
        assert on_disk == kept, "dropped takes are deleted"

        locked = project.lines[1]
        project.set_locked(locked.id, True)
        project.set_text(locked.id, "Something else entirely.")
        report = render(project, engine)
        assert (report.rendered, report.locked) == (0, 1) and project.status(locked) == "locked"
        with pytest.raises(EngineError, match="locked"):
            project.regenerate([locked.id])
        exported = export(project, tmp_path / "locked.wav")  # a locked line keeps its take
        assert exported.lines == 6


def test_emotion_and_settings_invalidate_only_their_line(work: Path, engine: Engine, tmp_path: Path) -> None:
    with new_project(work, tmp_path / "p") as project:
        render(project, engine)
        a, b = project.lines[0], project.lines[1]
        project.set_emotion(a.id, Emotion("vector", vector=(0, 0, 0.6, 0, 0, 0, 0, 0.2)))
        project.set_line_settings(b.id, {"diffusion_steps": 3})
        assert [project.status(ln) for ln in project.lines] == ["stale", "stale"] + ["current"] * 4
        assert render(project, engine).rendered == 2
        project.set_pause(a.id, 0)  # the pause is placement, not audio
        assert project.status(a) == "current"
        project.set_voice("Bob", str(work / "alice.wav"))  # every Bob line changes voice
        assert [project.status(ln) for ln in project.lines] == ["current", "stale", "current", "stale", "current",
                                                                 "stale"]


def test_timed_lines_padded_and_overrun(work: Path, engine: Engine, tmp_path: Path) -> None:
    srt = ("1\n00:00:01,000 --> 00:00:02,000\nFirst cue.\n\n"
           "2\n00:00:02,500 --> 00:00:02,550\nA cue far too short.\n\n"
           "3\n00:00:02,560 --> 00:00:04,000\n<i>Third</i> cue.\n")
    with new_project(work, tmp_path / "p", srt, "srt", default_voice=str(work / "alice.wav")) as project:
        assert [(ln.start_ms, ln.end_ms, ln.text) for ln in project.lines] == [
            (1000, 2000, "First cue."), (2500, 2550, "A cue far too short."), (2560, 4000, "Third cue.")]
        render(project, engine)
        takes = [ln.active_take for ln in project.lines]
        assert all(t is not None for t in takes)
        over = project.lines[1].overrun
        assert over == pytest.approx(takes[1].samples / SR - 0.05) and over > 0
        assert project.lines[0].overrun == 0 == project.lines[2].overrun
        report = export(project, tmp_path / "timed.wav")
        audio, _ = sf.read(str(tmp_path / "timed.wav"), dtype="int16")
        starts, total = expected_starts(project.folder)
        assert starts[0] == SR and starts[1] == round(2.5 * SR)
        assert starts[2] == max(round(2.56 * SR), starts[1] + takes[1].samples)
        assert len(audio) == total == starts[2] + round(1.44 * SR) and report.seconds == pytest.approx(total / SR)
        assert not audio[:SR].any(), "silence before the first cue"
        np.testing.assert_array_equal(audio[SR:SR + takes[0].samples], take_audio(project.folder,
                                                                                   project.lines[0].to_dict()))


def test_progress_and_cancel(work: Path, engine: Engine, tmp_path: Path) -> None:
    with new_project(work, tmp_path / "p") as project:
        cancel = threading.Event()
        seen: list[RenderProgress] = []

        def on_progress(p: RenderProgress) -> None:
            seen.append(p)
            if p.done == 2:
                cancel.set()

        report = render(project, engine, on_progress=on_progress, cancel=cancel)
        assert report.cancelled and report.rendered == 2
        assert [project.status(ln) for ln in project.lines] == ["current"] * 2 + ["pending"] * 4
        fractions = [p.fraction for p in seen]
        assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
        assert any(p.eta is not None and p.rtf is not None for p in seen)
        rest = render(project, engine)
        assert (rest.rendered, rest.current) == (4, 2)
