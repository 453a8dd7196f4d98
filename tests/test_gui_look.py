"""The studio as a laptop user meets it (issue 16), on the real window under Xvfb with the stand-in engine:

* it fits a 1280×720 screen (requested size, every control mapped and inside the window) and still works at its
  minimum size on a 1024×640 screen (the right column scrolls: every control can be scrolled into view);
* light, dark and "follow the system" recolour the waveform, the level meter and the text box;
* files dropped through tkDnD's own event path set the voice, fill the library, the emotion clip and the text;
* the pronunciation dictionary editor saves, reloads, and changes the segment preview and the spoken segments;
* Save as MP3, FLAC and Opus writes files that decode to the result's length, the last format remembered.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from gui_helpers import Studio, close_studio, make_studio, pump, screen, simulate_drop, write_tone

from core.api import SAMPLE_RATE
from desktop.pronunciation import Entry, read_file
from desktop.theme import DARK, LIGHT
from desktop.window import MIN_SIZE

CONTROLS = {"TButton", "TScale", "TEntry", "TCombobox", "TCheckbutton", "TRadiobutton", "TSpinbox", "TMenubutton",
            "Text", "Listbox", "Treeview"}


@pytest.fixture(scope="session")
def laptop() -> str:
    return screen("1280x720")


@pytest.fixture(scope="session")
def small_screen() -> str:
    return screen("1024x640")


def _walk(widget: tk.Misc) -> Iterator[tk.Misc]:
    yield widget
    for child in widget.winfo_children():
        if not isinstance(child, (tk.Toplevel, tk.Menu)):
            yield from _walk(child)


def _selected_tabs(root: tk.Misc) -> tuple[set[str], set[str]]:
    """(every notebook tab, the selected ones)."""
    tabs, selected = set(), set()
    for w in _walk(root):
        if w.winfo_class() == "TNotebook":
            tabs.update(str(t) for t in w.tabs())  # type: ignore[attr-defined]
            selected.add(str(w.select()))  # type: ignore[attr-defined]
    return tabs, selected


def _shown_by_design(widget: tk.Misc, root: tk.Misc, tabs: tuple[set[str], set[str]]) -> bool:
    """Not hidden on purpose: neither it nor a parent is forgotten by its geometry manager or an unselected tab."""
    while widget is not root:
        if widget.winfo_manager() == "":
            return False
        if str(widget) in tabs[0] and str(widget) not in tabs[1]:
            return False
        widget = widget.master
    return True


def unreachable(s: Studio) -> list[str]:
    """Controls of the window that cannot be seen (cut off, or outside the window even after scrolling to them)."""
    root, app = s.root, s.app
    root.update()
    left, top = root.winfo_rootx(), root.winfo_rooty()
    right, bottom = left + root.winfo_width(), top + root.winfo_height()
    problems = []
    tabs = _selected_tabs(root)
    for w in _walk(root):
        if w.winfo_class() not in CONTROLS or not _shown_by_design(w, root, tabs):
            continue
        if not w.winfo_ismapped():
            problems.append(f"{w.winfo_class()} {w} is cut off (not mapped)")
            continue
        app.right_scroll.show(w)
        root.update()
        x, y = w.winfo_rootx(), w.winfo_rooty()
        if x < left or y < top or x + w.winfo_width() > right or y + w.winfo_height() > bottom:
            problems.append(f"{w.winfo_class()} {w} at {x},{y} {w.winfo_width()}x{w.winfo_height()} is outside "
                            f"the window {left},{top}-{right},{bottom}")
    return problems


def assert_reachable(s: Studio, both_tabs: bool = False) -> None:
    """Every control reachable now (and, with ``both_tabs``, also on the Projects tab)."""
    assert (problems := unreachable(s)) == [], "\n".join(problems)
    if both_tabs:
        s.app.projects.notebook.select(s.app.projects.page)
        assert (problems := unreachable(s)) == [], "\n".join(problems)


def _everything_open(s: Studio) -> None:
    """The most controls the studio can show at once: emotion sliders, advanced settings."""
    s.app.emotion_panel.mode.set("vector")
    s.app.advanced.set_open(True)
    pump(s.root, 0.1)


def test_fits_a_1280x720_screen(laptop, audio_server, tmp_path):
    s = make_studio(tmp_path / "home", screen=laptop)
    try:
        root = s.root
        pump(root, 0.2)
        assert (root.winfo_screenwidth(), root.winfo_screenheight()) == (1280, 720)
        assert root.winfo_reqwidth() <= 1280 and root.winfo_reqheight() <= 720, (
            root.winfo_reqwidth(), root.winfo_reqheight())
        assert root.winfo_width() <= 1280 and root.winfo_height() <= 720
        assert root.winfo_rootx() >= 0 and root.winfo_rooty() >= 0
        assert_reachable(s)
        assert not s.app.right_scroll.scrolls  # the default studio needs no scrolling at all
        _everything_open(s)
        assert_reachable(s, both_tabs=True)
    finally:
        close_studio(s)


def test_minimum_size_on_a_1024x640_screen(small_screen, audio_server, tmp_path):
    s = make_studio(tmp_path / "home", screen=small_screen)
    try:
        root = s.root
        width, height = root.minsize()
        assert (width, height) == MIN_SIZE and width <= 1024 and height <= 640
        root.geometry(f"{width}x{height}+0+0")
        pump(root, 0.2)
        assert (root.winfo_width(), root.winfo_height()) == (width, height)
        _everything_open(s)
        assert s.app.right_scroll.scrolls  # the right column does not fit: it scrolls instead of being cut
        assert_reachable(s, both_tabs=True)
    finally:
        close_studio(s)


def test_window_size_is_remembered_but_never_larger_than_the_screen(laptop, audio_server, tmp_path):
    home = tmp_path / "home"
    s = make_studio(home, screen=laptop)
    s.root.geometry("1100x650+40+30")
    pump(s.root, 0.2)
    s.app.panes.sashpos(0, 520)  # the divider between the text and the controls, dragged
    pump(s.root, 0.1)
    sash = int(s.app.panes.sashpos(0))
    close_studio(s)
    s = make_studio(home, screen=laptop)
    try:
        pump(s.root, 0.2)
        assert (s.root.winfo_width(), s.root.winfo_height()) == (1100, 650)
        assert int(s.app.panes.sashpos(0)) == sash and 500 <= sash <= 520
        s.app.settings = replace(s.app.settings, window="2400x1500+900+700")
        s.app._save_settings()
    finally:
        s.root.destroy()  # without close(): the oversized geometry stays in settings.json
    s = make_studio(home, screen=laptop)
    try:
        pump(s.root, 0.2)
        assert s.root.winfo_width() <= 1280 and s.root.winfo_height() <= 720
        assert s.root.winfo_rootx() + s.root.winfo_width() <= 1280
    finally:
        close_studio(s)


# ------------------------------------------------------------------------------------------ theme


def _colours(s: Studio) -> tuple[str, str, str]:
    wave = s.app.results.waveform
    lines = wave.find_withtag("wave")
    return str(wave.cget("background")), str(wave.itemcget(lines[0], "fill")), str(s.app.text_panel.text.cget("bg"))


def test_theme_switch_recolours_waveform_and_text(studio, monkeypatch):
    app = studio.app
    app.voice_panel.set_clip(studio.voice)
    app.text_panel.set_text("Hello there.")
    studio.generate_and_wait()
    app.apply_settings(replace(app.settings, theme="dark"))
    assert app.palette is DARK and _colours(studio) == (DARK.wave_bg, DARK.wave, DARK.field_bg)
    assert str(app.text_panel.preview.cget("bg")) == DARK.field_bg
    app.apply_settings(replace(app.settings, theme="light"))
    assert app.palette is LIGHT and _colours(studio) == (LIGHT.wave_bg, LIGHT.wave, LIGHT.field_bg)
    import darkdetect

    monkeypatch.setattr(darkdetect, "theme", lambda: "Dark")  # the OS says dark
    app.apply_settings(replace(app.settings, theme="system"))
    assert app.palette is DARK and _colours(studio) == (DARK.wave_bg, DARK.wave, DARK.field_bg)
    monkeypatch.setattr(darkdetect, "theme", lambda: "Light")  # ... and later light: seen at the next look
    app._follow_system_theme()
    assert app.palette is LIGHT and _colours(studio) == (LIGHT.wave_bg, LIGHT.wave, LIGHT.field_bg)
    assert "sun-valley-light" == str(studio.root.tk.call("ttk::style", "theme", "use"))
    dialog = app.open_recorder()  # a window built later starts in the theme: its level meter too
    try:
        app.apply_settings(replace(app.settings, theme="dark"))
        dialog.set_level(0.5)
        assert str(dialog.meter.cget("background")) == DARK.wave_bg
        assert str(dialog.meter.itemcget("bar", "fill")) == DARK.meter_ok
        assert str(dialog.wave.cget("background")) == DARK.wave_bg
    finally:
        dialog.close()
    assert studio.dialogs.messages() == []


# ------------------------------------------------------------------------------------------ drag and drop


def test_dropped_files_set_voice_library_emotion_and_text(studio, tmp_path):
    app = studio.app
    assert app.voice_panel.dnd and app.text_panel.dnd  # tkinterdnd2 with tkDnD is there: drops are real
    folder = tmp_path / "my clips"
    folder.mkdir()
    clip = write_tone(folder / "Grandpa reads.wav", seconds=3.0)
    # onto a button inside the Voice panel: tkDnD finds the panel, the clip becomes the voice
    button = next(w for w in _walk(app.voice_panel) if w.winfo_class() == "TButton")
    assert simulate_drop(button, [clip]) == "copy"
    assert app.voice_panel.voice_path.get() == str(clip)
    assert app.voice_panel.voice_label.get() == "Grandpa reads.wav (3.0 s)"
    # onto the library list: added under the file's name and chosen
    assert simulate_drop(app.voice_panel.tree, [write_tone(folder / "Narrator.flac", seconds=2.0)]) == "copy"
    names = [v.name for v in app.library.list()]
    assert names == ["Narrator"] and app.voice_panel.voice_label.get() == "Narrator (library)"
    # an emotion clip onto the Emotion panel
    emotion = write_tone(folder / "angry.wav", seconds=1.5, freq=330.0)
    simulate_drop(app.emotion_panel, [emotion])
    assert app.emotion_panel.mode.get() == "audio" and app.emotion_panel.clip.get() == str(emotion)
    # subtitles onto the text box: the cues' words, no numbers or times
    srt = folder / "scene.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\n"
                   "How are you?\n", encoding="utf-8")
    simulate_drop(app.text_panel.text, [srt])
    assert app.text_panel.get_text() == "Hello there.\n\nHow are you?"
    assert studio.dialogs.messages() == []
    # the wrong kind of file: said in GUI words, nothing changes
    before = app.voice_panel.voice_path.get()
    simulate_drop(app.voice_panel, [srt])
    assert app.voice_panel.voice_path.get() == before
    assert studio.dialogs.messages() == ["Drop an audio file here (WAV, FLAC, MP3 or OGG); text files go onto the Text "
                                         "box."]


# ------------------------------------------------------------------------------------------ dictionary


def test_dictionary_editor_saves_reloads_and_changes_the_preview(studio, tmp_path):
    app, dialogs = studio.app, studio.dialogs
    app.voice_panel.set_clip(studio.voice)
    app.text_panel.set_text("IndexTTS reads Nguyen well.")
    app.text_panel.update_preview()
    assert app.text_panel.segments == ["IndexTTS reads Nguyen well."]
    editor = app.open_dictionary()
    editor.term.set("IndexTTS")
    editor.reading.set("Index T T S")
    assert editor.add_entry()
    editor.term.set("Nguyen")
    editor.language.set("English")
    editor.reading.set("win")
    assert editor.add_entry()
    editor.term.set("")
    assert not editor.add_entry()  # no term: said, not added
    assert dialogs.messages() == ["Type the word or name to respell in 'Term'."]
    dialogs.clear()
    assert editor.save()
    editor.close()
    saved = app.pronunciation.path
    assert saved.parent == app.dirs.data and read_file(saved) == [Entry("IndexTTS", "Index T T S"),
                                                                 Entry("Nguyen", "win", "en")]
    assert app.text_panel.segments == ["Index T T S reads win well."]
    assert list(app.text_panel.preview.get(0, "end")) == ["  1. Index T T S reads win well."]
    job = studio.generate_and_wait()
    assert job is not None and app.results.current.result.segments == ["Index T T S reads win well."]

    # export, then a new session: the saved dictionary is loaded and applied before anything is typed
    editor = app.open_dictionary()
    exported = tmp_path / "export.yaml"
    dialogs.answer("save_file", str(exported))
    assert editor.export_file() == exported and read_file(exported) == read_file(saved)
    editor.close()
    close_studio(studio)
    again = make_studio(studio.home)
    try:
        again.app.text_panel.set_text("IndexTTS reads Nguyen well.")
        again.app.text_panel.update_preview()
        assert again.app.text_panel.segments == ["Index T T S reads win well."]
        editor = again.app.open_dictionary()
        assert editor.entries() == [Entry("IndexTTS", "Index T T S"), Entry("Nguyen", "win", "en")]
        # import replaces the reading of a term already listed and adds new ones; saving applies it
        imported = tmp_path / "more.yaml"
        imported.write_text("indextts: Index Tee Tee Ess\n重庆: {zh: chong2 qing4}\n", encoding="utf-8")
        again.dialogs.answer("open_file", str(imported))
        assert editor.import_file()
        assert editor.entries() == [Entry("indextts", "Index Tee Tee Ess"), Entry("Nguyen", "win", "en"),
                                    Entry("重庆", "chong2 qing4", "zh")]
        assert editor.save()
        editor.destroy()
        again.app.text_panel.update_preview()
        assert again.app.text_panel.segments == ["Index Tee Tee Ess reads win well."]
        again.app.text_panel.set_text("我住在重庆。")
        again.app.text_panel.update_preview()
        assert again.app.text_panel.segments == ["我住在chong2 qing4。"]
        assert again.dialogs.messages() == []
    finally:
        close_studio(again)


def test_a_broken_dictionary_file_is_said_once_and_kept(display, audio_server, tmp_path):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    broken = home / "data" / "pronunciation.yaml"
    broken.write_text("- just\n- a list\n", encoding="utf-8")
    s = make_studio(home)
    try:
        (message,) = s.dialogs.messages()
        assert message.startswith("pronunciation.yaml cannot be used as a pronunciation dictionary: ")
        assert broken.read_text(encoding="utf-8") == "- just\n- a list\n"
    finally:
        close_studio(s)


# ------------------------------------------------------------------------------------------ saving


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "wav"])
def test_save_as_every_format_decodes_to_the_same_length(studio, fmt):
    app, dialogs = studio.app, studio.dialogs
    app.voice_panel.set_clip(studio.voice)
    app.text_panel.set_text("Hello there. Saving in another format.")
    studio.generate_and_wait()
    audio = app.results.current.result.audio
    target = studio.home / "saved" / f"take.{fmt}"
    dialogs.answer("save_file", str(target))
    assert app.results.save_dialog() == target
    kind, opts = dialogs.calls[-1]
    assert kind == "save_file" and [t[1] for t in opts["filetypes"]][0] == "*.wav"
    info = sf.info(str(target))
    decoded, rate = sf.read(str(target), dtype="int16")
    assert decoded.ndim == 1 and info.channels == 1
    if fmt == "opus":
        assert (info.format, rate) == ("OGG", 48000)
        assert round(len(decoded) * SAMPLE_RATE / rate) == len(audio)
    else:
        assert rate == SAMPLE_RATE and len(decoded) == len(audio)
        assert info.format == {"mp3": "MP3", "flac": "FLAC", "wav": "WAV"}[fmt]
    if fmt in ("flac", "wav"):
        assert np.array_equal(decoded, audio)  # lossless
    elif fmt == "mp3":
        assert np.corrcoef(decoded.astype(np.float64), audio.astype(np.float64))[0, 1] > 0.9  # aligned, gapless
    # the format is remembered: the next Save offers it first, quick save uses it, and so does a new session
    assert app.settings.save_format == fmt
    dialogs.answer("save_file", "")
    app.results.save_dialog()
    kind, opts = dialogs.calls[-1]
    assert opts["defaultextension"] == f".{fmt}" and opts["filetypes"][0][1] == f"*.{fmt}"
    quick = app.results.quick_save()
    assert quick is not None and quick.suffix == f".{fmt}" and sf.info(str(quick)).frames > 0
    assert dialogs.messages() == []


def test_unknown_extension_is_refused_in_words(studio):
    app = studio.app
    app.voice_panel.set_clip(studio.voice)
    app.text_panel.set_text("Hello.")
    studio.generate_and_wait()
    target = studio.home / "take.aac"
    assert app.results.save(target) is None and not target.exists()
    assert studio.dialogs.messages() == [
        "Could not save take.aac. Cannot write audio to take.aac: the name must end in .wav, .flac, .mp3, .opus."]


# ------------------------------------------------------------------------------------------ words


def test_engine_messages_reach_the_window_in_gui_words(display, audio_server, tmp_path):
    from core.api import EngineError
    from desktop.dialogs import describe_error, gui_words

    assert gui_words("Model files in /m are incomplete: Missing file gpt.pth. Run 'python main.py models "
                     "download'.") == ("Model files in /m are incomplete: Missing file gpt.pth. Download them with "
                                       "'Set up models' (on the first-run screen).")
    assert gui_words("3 of 5 lines have no current take (first: line 2). Render the project first (python main.py "
                     "project render /x/y).") == "3 of 5 lines have no current take (first: line 2). Render the " \
                                                 "project first."
    assert gui_words("/x/a.wav already exists; choose another name or pass --overwrite.") == \
        "/x/a.wav already exists; choose another name."
    assert describe_error(EngineError("Line 3: the speaker 'Bob' has no voice. Map it to a clip (--voice "
                                      "Bob=clip.wav) or choose another speaker."))[0] == \
        "Line 3: the speaker 'Bob' has no voice. Map it to a clip or choose another speaker."
    # the first-run screen: what is missing, and the buttons to press, no command
    empty = tmp_path / "models"
    empty.mkdir()
    from core.engine import Engine

    s = make_studio(tmp_path / "home", model_dir=empty, engine=Engine())  # the real engine's own message
    try:
        text = s.app.first_run.message.get()
        assert s.app.first_run_visible and "main.py" not in text and "--" not in text
        assert "Press 'Set up models'" in text
    finally:
        close_studio(s)


def test_without_tkinterdnd2_the_studio_works_and_says_nothing(display, audio_server, tmp_path, monkeypatch):
    import sys

    import desktop.dnd

    monkeypatch.setitem(sys.modules, "tkinterdnd2", None)  # as if it were not installed
    monkeypatch.setattr(desktop.dnd, "_unavailable", {})
    s = make_studio(tmp_path / "home")
    try:
        app = s.app
        assert not app.voice_panel.dnd and not app.text_panel.dnd
        assert s.dialogs.calls == []  # nothing scary: only the log knows
        s.dialogs.answer("open_file", str(s.voice))
        app.voice_panel.open_clip()  # the file picker is the way
        assert app.voice_panel.voice_path.get() == str(s.voice)
        app.text_panel.set_text("Hello there.")
        assert s.generate_and_wait() is not None and s.dialogs.messages() == []
    finally:
        close_studio(s)
