"""The result panel and the preset bar as standalone widgets: everything they need comes in through their
constructor (no main window), and they own their state."""

from __future__ import annotations

import json
import tkinter as tk
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gui_helpers import FakeDialogs

from core.api import Emotion, GenerationSettings, SynthesisRequest, SynthesisResult
from desktop.history import HistoryEntry, Request
from desktop.settings import Preset, PresetStore
from desktop.widgets.preset_bar import PresetBar
from desktop.widgets.results import NO_RESULT, ResultPanel


@pytest.fixture
def root(display):
    r = tk.Tk()
    yield r
    r.destroy()


class Calls:
    """Records what a widget tells its collaborators."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.status: list[str] = []
        self.regenerate: list[HistoryEntry] = []
        self.preset: list[HistoryEntry] = []
        self.applied: list[Preset] = []

    def report_error(self, title: str, exc_or_message: BaseException | str, prefix: str = "") -> None:
        self.errors.append((title, prefix + str(exc_or_message)))


def entry(text: str, seconds: float, seed: int, created: float = 1_700_000_000.0) -> HistoryEntry:
    audio = (np.sin(np.arange(int(22050 * seconds)) / 7.0) * 8000).astype(np.int16)
    synthesis = SynthesisRequest(
        text=text, voice="/voices/bob.wav", emotion=Emotion(), settings=GenerationSettings(seed=seed)
    )
    return HistoryEntry(Request(synthesis, voice_label="Bob"), SynthesisResult(audio=audio), created=created)


def find_button(widget: tk.Misc, text: str) -> tk.Misc:
    for child in widget.winfo_children():
        if child.winfo_class() == "TButton" and str(child.cget("text")) == text:
            return child
        found = find_button(child, text) if child.winfo_children() else None
        if found is not None:
            return found
    return None  # type: ignore[return-value]


def make_results(root: tk.Tk, tmp_path: Path, dialogs: FakeDialogs, calls: Calls) -> ResultPanel:
    panel = ResultPanel(
        root,
        dialog=dialogs,
        report_error=calls.report_error,
        on_status=calls.status.append,
        output_dir=lambda: tmp_path / "out",
        output_device=lambda: "",
        on_regenerate=calls.regenerate.append,
        on_preset=calls.preset.append,
        streaming=True,
    )
    panel.pack(fill="both", expand=True)
    root.update()
    return panel


def test_result_panel_owns_history_current_and_saving(root, tmp_path):
    dialogs, calls = FakeDialogs(), Calls()
    panel = make_results(root, tmp_path, dialogs, calls)
    assert panel.current is None and panel.history == [] and panel.stream.get() is True

    assert panel.quick_save() is None and panel.save_wav_dialog() is None
    assert calls.errors == [("Save", NO_RESULT)] * 2 and dialogs.calls == []

    first, second = entry("Hello there.", 1.0, seed=7), entry("Second one.", 2.5, seed=8)
    panel.add(first)
    panel.add(second)
    root.update()
    assert panel.history == [first, second] and panel.current is second
    assert panel.position.get() == "0.0 / 2.5 s" and panel.waveform.duration == pytest.approx(2.5)
    tree = panel.history_panel.tree
    assert tree.get_children() == ("1", "0")  # the newest first
    assert tree.item("0", "values")[1:] == ("Hello there.", "Bob", "1.0 s", "7")

    tree.selection_set("0")
    root.update()
    assert panel.current is first and panel.position.get() == "0.0 / 1.0 s"
    find_button(panel, "Regenerate").invoke()
    find_button(panel, "Save as preset\u2026").invoke()
    assert calls.regenerate == [first] and calls.preset == [first]

    saved = panel.quick_save()
    again = panel.quick_save()
    assert saved is not None and saved.parent == tmp_path / "out" and saved.name.startswith("hello-there_")
    assert again is not None and again.name == saved.stem + "~2.wav"
    data, rate = sf.read(str(saved), dtype="int16")
    assert rate == 22050 and np.array_equal(data, first.result.audio)
    assert calls.status == [f"Saved {saved}", f"Saved {again}"]

    chosen = tmp_path / "picked.wav"
    dialogs.answer("save_file", str(chosen))
    assert panel.save_wav_dialog() == chosen
    ((kind, opts),) = dialogs.calls
    assert kind == "save_file" and opts["initialdir"] == str(tmp_path / "out")
    assert opts["initialfile"].startswith("hello-there_") and opts["parent"] is root
    assert np.array_equal(sf.read(str(chosen), dtype="int16")[0], first.result.audio)
    assert calls.errors == [("Save", NO_RESULT)] * 2  # nothing new went wrong


def test_preset_bar_saves_loads_imports_and_deletes(root, tmp_path):
    dialogs, calls = FakeDialogs(), Calls()
    store = PresetStore(tmp_path / "presets")
    now = Preset(name="", voice="/v.wav", emotion={"mode": "speaker"}, settings=GenerationSettings(seed=5).to_dict())
    bar = PresetBar(
        root,
        store,
        capture=lambda: Preset(now.name, now.voice, dict(now.emotion), dict(now.settings)),
        apply=calls.applied.append,
        dialog=dialogs,
        report_error=calls.report_error,
        on_status=calls.status.append,
    )
    bar.pack()
    root.update()
    assert bar.box.cget("values") == "" and bar.name.get() == ""

    assert bar.load("") is False and calls.errors == [("Preset", "Choose a preset first.")]
    dialogs.answer("string", "  Calm  ")
    path = bar.save_dialog()
    assert path == tmp_path / "presets" / "calm.json"
    assert json.loads(path.read_text())["settings"]["seed"] == 5
    assert bar.box.cget("values") == ("Calm",) and bar.name.get() == "Calm"
    assert calls.status == ["Preset 'Calm' saved."]

    bar.box.set("Calm")
    find_button(bar, "Load").invoke()
    assert [p.name for p in calls.applied] == ["Calm"] and calls.applied[0].settings == now.settings

    outside = tmp_path / "shared.json"
    outside.write_text(json.dumps(Preset(name="Shared", settings={"seed": 9}).to_json()))
    dialogs.answer("open_file", str(outside))
    assert bar.import_file() is True
    assert bar.box.cget("values") == ("Calm", "Shared") and calls.applied[-1].name == "Shared"

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    dialogs.answer("open_file", str(broken))
    assert bar.import_file() is False
    assert calls.errors[-1][0] == "Import preset"
    assert calls.errors[-1][1].startswith("Could not import broken.json: broken.json is not valid JSON")

    bar.name.set("Calm")
    bar.delete()  # the confirmation answers no: nothing is deleted
    assert path.exists()
    dialogs.answer("yesno", True)
    bar.delete()
    assert not path.exists() and bar.box.cget("values") == ("Shared",) and bar.name.get() == ""
    assert bar.load("Calm") is False
    assert calls.errors[-1][1].startswith("Could not load the preset 'Calm': The file ")
