"""The Projects view under Xvfb: the real main window with the stand-in engine, real project folders
(core.project), real take files and exports read back with soundfile/PyAV.

Import, render with progress (the Tk loop keeps servicing ``after`` callbacks during a render), the failed-lines
log, inline edit, drag to reorder, bulk speaker/emotion, regenerate a take / choose the active take / lock, play
a line and play from a line, export to every format, save as and recent projects, a project held by another
process opened read-only, and the close guard while a render runs.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
import tkinter as tk
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from gui_helpers import Studio, close_studio, make_studio, pump, wait_until, write_tone
from project_helpers import REPO, SCRIPT, SR, expected_starts, read_json

from core.api import Emotion
from core.project import Project
from core.project.export import EXTENSIONS
from desktop.standin import StandInEngine
from desktop.voice_library import VoiceLibrary

WAIT = 60.0


@pytest.fixture
def studio(display, audio_server, tmp_path):
    s = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.02))
    library = VoiceLibrary(s.app.dirs.voices)
    library.add_file("Alice", write_tone(tmp_path / "alice.wav", 1.5, freq=200.0))
    library.add_file("Bob", write_tone(tmp_path / "bob.wav", 1.5, freq=140.0))
    s.app.voice_panel.set_clip(s.voice)  # the studio's voice speaks every other speaker
    yield s
    close_studio(s)


def import_script(s: Studio, tmp_path: Path, text: str = SCRIPT, name: str = "meeting.txt",
                  fmt: str | None = "script"):
    src = tmp_path / name
    src.write_text(text, encoding="utf-8")
    view = s.app.projects
    s.dialogs.answer("open_file", str(src))
    assert view.import_file(fmt=fmt) is not None  # through the file dialog
    wait_until(s.root, lambda: view.job is None, WAIT)
    assert view.project is not None, s.dialogs.messages()
    return view


def render_all(s: Studio, only=None) -> None:
    view = s.app.projects
    assert view.render(only) is not None
    wait_until(s.root, lambda: view.job is None, WAIT)
    view.flush_events()
    s.root.update()


def double_click(widget: tk.Misc, x: int, y: int) -> None:
    """Two clicks in a row: Tk itself makes them a <Double-1> (event_generate cannot send one)."""
    for _ in range(2):
        widget.event_generate("<ButtonPress-1>", x=x, y=y)
        widget.event_generate("<ButtonRelease-1>", x=x, y=y)


def cells(view, line_id: str) -> dict[str, str]:
    names = ("n", "speaker", "emotion", "text", "status", "duration", "overrun")
    return dict(zip(names, (str(v) for v in view.table.tree.item(line_id, "values")), strict=True))


def test_import_and_render_with_progress_while_the_window_stays_responsive(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path, SCRIPT * 2)  # 12 lines, 4 chapters
    project = view.project
    assert project.folder.parent == app.dirs.data / "projects"
    # the Projects tab is selected and drawn above the notebook (a tab made before it would be hidden under it)
    siblings = app.studio.winfo_children()
    assert view.notebook.select() == str(view.page) and view.page.winfo_viewable()
    assert siblings.index(view.page) > siblings.index(view.notebook)
    assert all(siblings.index(view.notebook.nametowidget(t)) > siblings.index(view.notebook)
               for t in view.notebook.tabs())
    assert view.table.row_count() == 12 and len(project.chapters()) == 4
    first = project.lines[0]
    assert cells(view, first.id) == {"n": "\u00a7 1", "speaker": "Alice", "emotion": "\u2014",
                                     "text": "Hello there, Bob.", "status": "pending", "duration": "",
                                     "overrun": ""}
    library = {v.name: str(v.clip.resolve()) for v in VoiceLibrary(app.dirs.voices).list()}
    assert project.voices == {"Alice": library["Alice"], "Bob": library["Bob"]}  # library names matched
    assert app.commands.enabled("project_render") and not app.commands.enabled("project_stop")

    ticks: list[float] = []
    seen: list[tuple[str, str, float]] = []

    def tick() -> None:
        ticks.append(time.perf_counter())
        bar = view.render_bar
        seen.append((bar.lines.get(), bar.timing.get(), bar.fraction.get()))
        if view.job is not None:
            s.root.after(10, tick)

    started = time.perf_counter()
    assert app.commands.invoke("project_render") is not None  # the menu command
    assert view.job is not None and app.commands.enabled("project_stop")
    assert not app.commands.enabled("project_render")  # one render at a time
    s.root.after(10, tick)
    wait_until(s.root, lambda: view.job is None, WAIT)
    took = time.perf_counter() - started
    view.flush_events()
    gaps = np.diff([started, *ticks])
    print(f"render of 12 lines took {took:.2f} s; longest gap between after(10) ticks {gaps.max() * 1000:.0f} ms "
          f"over {len(ticks)} ticks")
    assert took > 1.0 and len(ticks) > 20  # long enough that a frozen loop would show
    assert gaps.max() < 0.4, f"the window froze for {gaps.max():.2f} s during the render"

    assert view.report is not None and view.report.rendered == 12 and not view.report.failed
    lines_seen = [line for line, _, _ in seen]
    assert "0 of 12 lines done" in lines_seen and any(t.startswith("about") and "RTF" in t for _, t, _ in seen)
    fractions = [f for _, _, f in seen]
    assert all(b >= a - 1e-6 for a, b in zip(fractions, fractions[1:], strict=False))  # never goes back
    assert view.render_bar.lines.get() == "12 of 12 lines done" and view.render_bar.fraction.get() == 100.0
    assert "RTF" in view.render_bar.timing.get()
    assert app.status.get().startswith("Render finished: 12 line(s) rendered, 0 already current, 0 failed")
    data = read_json(project.folder)
    for line in data["lines"]:
        take = next(t for t in line["takes"] if t["n"] == line["active"])
        audio, sr = sf.read(str(project.folder / take["file"]), dtype="int16")
        assert sr == SR and len(audio) == take["samples"]
        assert cells(view, line["id"])["status"] == "current"
        assert cells(view, line["id"])["duration"] == f"{take['samples'] / SR:.2f} s"
    # the engine got one request per line, each with the speaker's clip
    calls = app.engine.calls[-12:]
    assert [c["text"] for c in calls] == [line.text for line in project.lines]
    assert {c["voice"] for c in calls} == {library["Alice"], library["Bob"]}

    # nothing changed: a second render renders nothing
    render_all(s)
    assert view.report.rendered == 0 and view.report.current == 12


def test_the_studios_stream_switches_leave_project_renders_as_they_were(studio: Studio, tmp_path: Path):
    """'Stream inside segments' (one beam) is for the studio's playback: a project renders whole segments with the
    beams typed in the Advanced panel."""
    s, app = studio, studio.app
    app.results.stream.set(True)
    app.results.stream_inside.set(True)
    view = import_script(s, tmp_path)
    before = len(app.engine.calls)
    render_all(s)
    calls = app.engine.calls[before:]
    assert len(calls) == len(view.project.lines) > 0
    assert all(c["settings"]["stream"] is False and c["settings"]["num_beams"] == 3 for c in calls)
    assert all(line.active_take is not None for line in view.project.lines)
    assert not any("one beam" in w for w in s.dialogs.messages())


def test_failed_lines_are_logged_with_their_error_and_the_rest_render(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    project = view.project
    project.set_voice("Bob", tmp_path / "gone.wav")  # Bob's clip is missing
    render_all(s)
    bobs = [line.id for line in project.lines if line.speaker == "Bob"]
    failed = dict(view.failures.entries())
    assert sorted(failed) == sorted(bobs) and all("gone.wav" in e and "missing" in e for e in failed.values())
    assert view.report.rendered == 3 and len(view.report.failed) == 3
    assert all(cells(view, i)["status"] == "failed" for i in bobs)
    assert "failed" in view.table.tree.item(bobs[0], "tags")
    # fixing the clip and rendering again clears the log
    project.set_voice("Bob", write_tone(tmp_path / "bob2.wav", 1.0, freq=150.0))
    render_all(s)
    assert view.failures.entries() == [] and view.report.rendered == 3


def test_inline_edit_drag_reorder_and_bulk_assign(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    project, tree = view.project, view.table.tree
    render_all(s)
    ids = [line.id for line in project.lines]

    # double-click the text cell, type, Enter: saved to project.json, only that line is stale
    tree.see(ids[1])
    s.root.update()
    x, y, w, h = tree.bbox(ids[1], "text")
    double_click(tree, x + 5, y + h // 2)
    s.root.update()
    edit = view.table.edit
    assert edit is not None and edit.line_id == ids[1] and edit.var.get() == "Hi Alice. Good to see you."
    edit.widget.delete(0, "end")
    edit.widget.insert(0, "Hi Alice. Lovely day.")
    edit.widget.event_generate("<Return>")
    s.root.update()
    view.flush_events()
    assert view.table.edit is None
    assert read_json(project.folder)["lines"][1]["text"] == "Hi Alice. Lovely day."
    assert cells(view, ids[1])["status"] == "stale" and cells(view, ids[1])["text"] == "Hi Alice. Lovely day."
    assert [cells(view, i)["status"] for i in ids].count("current") == 5
    render_all(s)
    assert view.report.rendered == 1  # one edit renders one line

    # an empty text is refused with a message; the editor stays open until Esc
    view.table.begin_edit(ids[0], "text").var.set("   ")
    assert not view.table.commit_edit() and view.table.edit is not None
    assert "empty" in s.dialogs.messages()[-1]
    view.table.edit.widget.focus_force()
    s.root.update()
    view.table.edit.widget.event_generate("<Escape>")
    s.root.update()
    assert view.table.edit is None and project.lines[0].text == "Hello there, Bob."

    # drag the first row below the third
    s.root.update()
    _, y0, _, h0 = tree.bbox(ids[0])
    _, y2, _, h2 = tree.bbox(ids[2])
    tree.event_generate("<ButtonPress-1>", x=30, y=y0 + h0 // 2)
    for yy in range(y0 + h0 // 2, y2 + h2 // 2 + 1, 4):
        tree.event_generate("<B1-Motion>", x=30, y=yy)
    tree.event_generate("<ButtonRelease-1>", x=30, y=y2 + h2 // 2)
    s.root.update()
    view.flush_events()
    moved = [ids[1], ids[2], ids[0], *ids[3:]]
    assert [line.id for line in project.lines] == moved
    assert [line["id"] for line in read_json(project.folder)["lines"]] == moved
    assert list(tree.get_children()) == moved
    assert cells(view, ids[0])["n"] == "\u00a7 3"  # its chapter title moves along

    # bulk: the selected lines get a speaker (a library voice) and an emotion
    view.table.select([ids[3], ids[5]])
    view.speaker.set("Alice")
    view.buttons["assign"].invoke()
    emotion = Emotion(mode="vector", vector=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6), alpha=1.0)
    assert view.assign_emotion(emotion)
    view.flush_events()
    lines = {line["id"]: line for line in read_json(project.folder)["lines"]}
    assert lines[ids[3]]["speaker"] == lines[ids[5]]["speaker"] == "Alice"
    assert lines[ids[3]]["emotion"]["vector"][7] == 0.6 and "emotion" not in lines[ids[4]]
    assert cells(view, ids[5])["speaker"] == "Alice" and cells(view, ids[5])["emotion"] == "calm 0.60"
    assert cells(view, ids[3])["status"] == "stale" and cells(view, ids[4])["status"] == "current"
    # the emotion dialog applies the same way
    view.table.select([ids[4]])
    top = view.open_emotion_dialog()
    panel = next(w for w in top.winfo_children() if w.winfo_class() == "TLabelframe")
    panel.mode.set("text")
    panel.description.set("quietly amused")
    next(w for w in top.winfo_children() if w.winfo_class() == "TButton").invoke()
    assert not top.winfo_exists() and project.line(ids[4]).emotion.text == "quietly amused"
    assert not [m for m in s.dialogs.messages() if "empty" not in m]


def test_regenerate_choose_take_lock_and_play(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    project = view.project
    render_all(s)
    line = project.lines[1]
    first = line.active_take
    view.table.select([line.id])
    assert view.regenerate() is not None
    wait_until(s.root, lambda: view.job is None, WAIT)
    view.flush_events()
    assert view.report.rendered == 1 and [t.n for t in line.takes] == [1, 2] and line.active == 2
    second = line.active_take
    a1, _ = sf.read(str(project.folder / first.file), dtype="int16")
    a2, _ = sf.read(str(project.folder / second.file), dtype="int16")
    assert second.seed != first.seed and not np.array_equal(a1[: min(len(a1), len(a2))], a2[: min(len(a1), len(a2))])

    # the context menu lists both takes, the active one checked; choosing take 1 makes it current again
    menu = view.line_menu(line.id)
    takes = menu.nametowidget(menu.entrycget(menu.index("Takes"), "menu"))
    assert [takes.entrycget(i, "label").split(" (")[0] for i in range(2)] == ["Take 1", "Take 2"]
    assert menu._active.get() == 2
    takes.invoke(0)
    view.flush_events()
    assert line.active == 1 and read_json(project.folder)["lines"][1]["active"] == 1
    assert cells(view, line.id)["status"] == "current" and cells(view, line.id)["duration"] == f"{first.duration:.2f} s"
    render_all(s)
    assert view.report.rendered == 0  # the chosen take is current

    # lock: the line keeps its take; regenerate refuses a locked line
    view.table.select([line.id])
    view.buttons["lock"].invoke()
    view.flush_events()
    assert line.locked and cells(view, line.id)["status"] == "locked" and view.buttons["lock"].cget("text") == "Unlock"
    project.set_text(line.id, "Something else entirely.")
    render_all(s)
    assert view.report.rendered == 0 and view.report.locked == 1 and line.active == 1
    assert view.regenerate([line.id]) is None and "locked" in s.dialogs.messages()[-1]

    # play one line, then from a line to the end (takes and pauses, read as playback goes)
    assert view.play_line(project.lines[0].id)
    player = view.player
    take0 = project.lines[0].active_take
    assert player is not None and player.playing
    assert abs(player.duration - take0.duration) < 0.01
    view.stop_playback()
    assert view.play_from(project.lines[3].id)
    expected = sum(ln.active_take.duration + ln.pause_ms / 1000 for ln in project.lines[3:])
    wait_until(s.root, lambda: view._play_queue is None, WAIT)
    assert abs(player.duration - expected) < 0.01
    view.stop_playback()
    assert not s.dialogs.messages()[:-1], s.dialogs.messages()


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_export_every_format(studio: Studio, tmp_path: Path, ext: str):
    s = studio
    view = import_script(s, tmp_path)
    render_all(s)
    starts, total = expected_starts(view.project.folder)
    out = tmp_path / "out" / f"book{ext}"
    out.parent.mkdir()
    s.dialogs.answer("save_file", str(out))
    assert view.export_dialog() is not None
    wait_until(s.root, lambda: view.job is None, WAIT)
    assert view.exported is not None and view.exported.path == out, s.dialogs.messages()
    assert out.is_file() and not list(out.parent.glob(".*.part"))
    assert s.app.status.get().startswith("Exported 6 lines")
    if ext in (".wav", ".flac"):
        audio, sr = sf.read(str(out), dtype="int16")
        assert sr == SR and len(audio) == total
    elif ext in (".mp3", ".opus"):
        info = sf.info(str(out))
        rate = 48000 if ext == ".opus" else SR
        assert info.samplerate == rate and abs(info.frames - total * rate / SR) < 0.05 * rate
    elif ext == ".m4b":
        with av.open(str(out)) as container:
            assert [c["metadata"]["title"] for c in container.chapters()] == ["The Meeting", "The Plan"]
            starts_s = [float(c["start"] * c["time_base"]) for c in container.chapters()]
            assert starts_s[0] == 0 and abs(starts_s[1] - starts[3] / SR) < 0.002
    elif ext in (".srt", ".vtt"):
        text = out.read_text(encoding="utf-8")
        assert text.count("-->") == 6 and "Hello there, Bob." in text
    else:
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        assert [r["speaker"] for r in rows] == ["Alice", "Bob", "Alice", "Bob", "Alice", "Bob"]
        assert view.exported.extra == out.parent / "book_lines"
        assert all((out.parent / r["file"]).is_file() for r in rows) and rows[0]["file"].startswith("book_lines/")


def test_export_of_an_unrendered_project_says_so(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    assert view.export(tmp_path / "book.wav") is not None
    wait_until(s.root, lambda: view.job is None, WAIT)
    assert not (tmp_path / "book.wav").exists() and "Render the project first" in s.dialogs.messages()[-1]


def test_save_as_recent_and_reopen(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path)
    render_all(s)
    old = view.project.folder
    copy = tmp_path / "copy"
    s.dialogs.answer("directory", str(copy))
    assert app.commands.invoke("project_save_as") is not None
    assert view.project.folder == copy and (copy / "project.json").is_file()
    assert all(cells(view, line.id)["status"] == "current" for line in view.project.lines)
    assert view.recent.folders[:2] == [str(copy), str(old)]
    # the recent menu reopens the first project; it was released by the save-as
    view._fill_recent()
    assert view.recent_menu.entrycget(1, "label") == str(old)
    view.recent_menu.invoke(1)
    assert view.project.folder == old and not view.project.read_only
    same = view.project
    assert view.open_project(old) is same and not same.read_only  # opening the open project again: that one
    assert not s.dialogs.messages("error", "warning")
    # the list is kept for the next start
    from desktop.projects_view import RecentProjects

    assert RecentProjects(app.dirs.config / "projects.json").folders[:2] == [str(old), str(copy)]


def test_a_project_open_in_another_process_opens_read_only(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path)
    folder = view.project.folder
    assert view.close_project() and view.project is None
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); from core.project import Project; "
         "p = Project.open(sys.argv[1]); assert not p.read_only; print('held', flush=True); sys.stdin.read()",
         str(folder), str(REPO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        s.dialogs.answer("directory", str(folder))
        assert app.commands.invoke("project_open") is not None
        project = view.project
        assert project.read_only
        warning = s.dialogs.messages("warning")[-1]
        assert "already open in process" in warning and "read-only" in warning
        assert "read-only" in view.title.get()
        assert not app.commands.enabled("project_render") and app.commands.enabled("project_export")
        assert str(view.buttons["assign"].cget("state")) == "disabled"
        assert not view.edit_cell(project.lines[0].id, "text", "Changed.")
        assert "read-only" in s.dialogs.messages()[-1]
        assert read_json(folder)["lines"][0]["text"] == "Hello there, Bob."
    finally:
        holder.communicate("", timeout=20)
    # once the other process let go, opening again gives a writable project
    assert view.open_project(folder) is not None and not view.project.read_only


def test_closing_during_a_render_asks_first(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path, SCRIPT * 3)
    view.render()
    wait_until(s.root, lambda: sum(line.active_take is not None for line in view.project.lines) >= 2, WAIT)
    app.close()  # the (fake) dialog answers No: the window stays and the render goes on
    assert s.root.winfo_exists() and view.job is not None
    assert "A render is running" in s.dialogs.messages("yesno")[-1]
    job = view.job
    s.dialogs.answer("yesno", True)
    app.close()
    assert job.cancel.is_set() and not job.thread.is_alive()
    with pytest.raises(tk.TclError):
        s.root.winfo_exists()
    # the lines rendered so far are in project.json; the folder is free again
    folder = app.dirs.data / "projects" / "meeting"
    with Project.open(folder) as reopened:
        assert not reopened.read_only
        done = [line for line in reopened.lines if line.active_take is not None]
        assert 0 < len(done) < 18


def test_a_500k_character_book_imports_and_fills_the_table_without_freezing(studio: Studio, tmp_path: Path):
    s = studio
    para = ("It was a bright cold day in April, and the clocks were striking thirteen. " * 3).strip()
    book = "\n\n".join(f"{k}. {para}" for k in range(2200))
    assert len(book) >= 500_000
    src = tmp_path / "book.txt"
    src.write_text(book, encoding="utf-8")
    view = s.app.projects
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.perf_counter())
        if view.job is not None or view.table.filling or view.table.filled_at is None:
            s.root.after(10, tick)

    started = time.perf_counter()
    view.import_file(src)
    s.root.after(10, tick)
    wait_until(s.root, lambda: view.job is None, WAIT)
    imported = time.perf_counter()
    wait_until(s.root, lambda: view.table.filled_at is not None, WAIT)
    pump(s.root, 0.05)
    gaps = np.diff([started, *ticks])
    print(f"500k-character book: {len(view.project.lines)} lines; import and table filled "
          f"{max(imported, view.table.filled_at) - started:.2f} s; longest gap between after(10) ticks "
          f"{gaps.max() * 1000:.0f} ms")
    assert view.table.row_count() == len(view.project.lines) == 2200
    assert imported - started < 10
    assert gaps.max() < 0.5, f"the window froze for {gaps.max():.2f} s"
    # one edit updates one row and is saved at once
    line = view.project.lines[1500]
    assert view.edit_cell(line.id, "text", "A shorter line.")
    assert cells(view, line.id)["text"] == "A shorter line." and cells(view, line.id)["n"] == "1501"


def test_subtitle_lines_show_their_overrun(studio: Studio, tmp_path: Path):
    s = studio
    srt = ("1\n00:00:00,000 --> 00:00:00,200\nA line far too long for its tiny cue, it runs over.\n\n"
           "2\n00:00:05,000 --> 00:00:09,000\nThis one fits.\n")
    view = import_script(s, tmp_path, srt, name="film.srt", fmt=None)  # the format from the extension
    project = view.project
    assert [line.timed for line in project.lines] == [True, True]
    render_all(s)
    over, fits = project.lines
    assert over.overrun > 0 and fits.overrun == 0
    assert cells(view, over.id)["overrun"] == f"+{over.overrun:.2f} s" and cells(view, fits.id)["overrun"] == ""
    assert "overrun" in view.table.tree.item(over.id, "tags")
    assert abs(over.overrun - (over.active_take.duration - 0.2)) < 1e-9


def test_export_of_the_selected_chapters(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    render_all(s)
    project = view.project
    starts, total = expected_starts(project.folder)
    view.table.select([project.lines[4].id])  # a line of the second chapter
    out = tmp_path / "plan.wav"
    s.dialogs.answer("save_file", str(out))
    s.dialogs.answer("yesno", True)  # only the chapters of the selection
    assert view.export_dialog() is not None
    wait_until(s.root, lambda: view.job is None, WAIT)
    assert "1 chapter(s)" in s.dialogs.messages("yesno")[-1]
    audio, _ = sf.read(str(out), dtype="int16")
    assert len(audio) == total - starts[3] and view.exported.chapters == [("The Plan", 0.0)]


def test_an_api_job_gets_its_turn_between_the_lines_of_a_render(display, audio_server, tmp_path: Path):
    from core.jobs import JobEvent

    s = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.03))
    try:
        s.app.voice_panel.set_clip(s.voice)
        view = import_script(s, tmp_path, SCRIPT * 2)
        events: list[tuple[str, str]] = []
        s.app._engine_lock.gate.add_listener(
            lambda e: events.append((e.job.source, e.kind)) if e.kind != "progress" else None)
        view.render()
        wait_until(s.root, lambda: events.count(("project", "finished")) >= 2, WAIT)
        gate = s.app._engine_lock.gate
        ticket = gate.submit("api", "a request from another app")  # as the server submits its jobs
        done: list[JobEvent] = []

        def api_job() -> None:
            with ticket:
                done.append(JobEvent("started", ticket.info))

        thread = threading.Thread(target=api_job)
        thread.start()
        wait_until(s.root, lambda: view.job is None and not thread.is_alive(), WAIT)
        api_at = events.index(("api", "started"))
        lines_after = events[api_at:].count(("project", "started"))
        assert done and 0 < lines_after < 10, events  # it ran between two lines, not after the whole render
        assert view.report.rendered == 12
    finally:
        close_studio(s)


def test_chapter_pause_add_and_delete_lines(studio: Studio, tmp_path: Path):
    s = studio
    view = import_script(s, tmp_path)
    project = view.project
    ids = [line.id for line in project.lines]
    menu = view.line_menu(ids[1])
    labels = [menu.entrycget(i, "label") for i in range(menu.index("end") + 1) if menu.type(i) == "command"]
    assert {"Pause after\u2026", "Chapter title\u2026", "Add a line below\u2026", "Delete line(s)"} <= set(labels)

    s.dialogs.answer("string", "An Interlude")
    assert view.set_chapter(ids[1])
    assert [c.title for c in project.chapters()] == ["The Meeting", "An Interlude", "The Plan"]
    assert cells(view, ids[1])["n"] == "\u00a7 2" and read_json(project.folder)["lines"][1]["chapter"] == "An Interlude"

    view.table.select(ids[:2])
    s.dialogs.answer("string", "1200")
    assert view.set_pause()
    assert [line["pause_ms"] for line in read_json(project.folder)["lines"][:3]] == [1200, 1200, 400]
    s.dialogs.answer("string", "soon")
    assert not view.set_pause() and "whole number" in s.dialogs.messages()[-1]

    s.dialogs.answer("string", "A brand new line.")
    assert view.add_line(ids[2])
    new = project.lines[3]
    assert new.text == "A brand new line." and new.speaker == project.lines[2].speaker
    assert list(view.table.tree.get_children())[3] == new.id and cells(view, new.id)["status"] == "pending"

    view.table.select([ids[0], new.id])
    s.dialogs.answer("yesno", True)
    view.table.tree.focus_force()
    s.root.update()
    view.table.tree.event_generate("<Delete>")
    s.root.update()
    view.flush_events()
    assert "Delete 2 line(s)" in s.dialogs.messages("yesno")[-1]
    assert [line.id for line in project.lines] == ids[1:] and view.table.row_count() == 5
    assert [line["id"] for line in read_json(project.folder)["lines"]] == ids[1:]


def test_stop_ends_a_render_within_a_line_and_render_resumes(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path, SCRIPT * 3)
    view.render()
    wait_until(s.root, lambda: sum(line.active_take is not None for line in view.project.lines) >= 2, WAIT)
    stopped = time.perf_counter()
    job = view.job
    assert app.commands.enabled("project_stop")
    app.commands.invoke("project_stop")
    assert job.cancel.is_set() and view.render_bar.stage.get() == "Stopping\u2026"
    wait_until(s.root, lambda: view.job is None, WAIT)
    assert time.perf_counter() - stopped < 1.0 and view.report.cancelled
    done = view.report.rendered
    assert 2 <= done < 18 and app.status.get().startswith("Render stopped")
    render_all(s)
    assert view.report.current == done and view.report.rendered == 18 - done


def test_lines_take_the_studio_settings_and_a_pending_edit_is_kept(studio: Studio, tmp_path: Path):
    s, app = studio, studio.app
    view = import_script(s, tmp_path)
    project = view.project
    render_all(s)
    ids = [line.id for line in project.lines]
    app.advanced.set_settings({"temperature": 0.6, "seed": 42})
    view.table.select(ids[:2])
    assert view.use_studio_settings()
    saved = read_json(project.folder)["lines"]
    assert saved[0]["settings"] == {"temperature": 0.6} and saved[0]["seed"] == 42 and "settings" not in saved[2]
    assert project.effective_settings(project.lines[1]).temperature == 0.6
    assert [cells(view, i)["status"] for i in ids] == ["stale", "stale"] + ["current"] * 4
    render_all(s)
    assert view.report.rendered == 2 and app.engine.calls[-1]["settings"]["seed"] == 42

    # an edit left open when the project is closed is saved, not lost
    edit = view.table.begin_edit(ids[3], "text")
    edit.var.set("Yes. First the compass.")
    folder = project.folder
    assert view.close_project()
    assert read_json(folder)["lines"][3]["text"] == "Yes. First the compass."


def test_a_reload_during_a_render_stops_it_so_no_project_mixes_models(display, audio_server, tmp_path: Path):
    from types import SimpleNamespace

    engine = StandInEngine(step_seconds=0.02)
    engine.pipeline = SimpleNamespace(fingerprint="models-a")  # what the real engine's loaded models report
    s = make_studio(tmp_path / "home", engine=engine)
    try:
        s.app.voice_panel.set_clip(s.voice)
        view = import_script(s, tmp_path, SCRIPT * 2)
        view.render()
        wait_until(s.root, lambda: sum(line.active_take is not None for line in view.project.lines) >= 2, WAIT)
        engine.pipeline = SimpleNamespace(fingerprint="models-b")  # Settings → another model folder, reloaded
        wait_until(s.root, lambda: view.job is None, WAIT)
        assert view.report.cancelled and view.report.rendered < 12
        assert s.app.status.get().startswith("Render stopped: the models were reloaded")
        assert read_json(view.project.folder)["model"] == "models-a"
        render_all(s)  # every line again, with the new models only
        assert view.report.rendered == 12 and read_json(view.project.folder)["model"] == "models-b"
    finally:
        close_studio(s)
