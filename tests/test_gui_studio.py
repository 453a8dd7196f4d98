"""The main window driven for real under Xvfb with the stand-in engine."""

from __future__ import annotations

import json
import time

import numpy as np
import soundfile as sf
from gui_helpers import close_studio, make_studio, pump, wait_until

from core.api import EMOTION_NAMES, GenerationSettings, normalize_emo_vec
from core.device import probe
from desktop.app import selftest
from desktop.standin import StandInEngine


def type_text(root, widget, text: str) -> None:
    widget.focus_force()
    root.update()
    for ch in text:
        keysym = {" ": "space", ".": "period", "!": "exclam", "?": "question"}.get(ch, ch)
        widget.event_generate("<KeyPress>", keysym=keysym)
    root.update()


def test_generate_save_full_flow(studio):
    app, root, dialogs = studio.app, studio.root, studio.dialogs
    type_text(root, app.text_panel.text, "Hi there. Bye now!")
    pump(root, 0.3)  # the segment preview is debounced
    assert app.text_panel.get_text() == "Hi there. Bye now!"
    assert app.text_panel.char_count.get() == "18 characters"
    assert app.text_panel.preview.get(0, "end") == ("  1. Hi there.", "  2. Bye now!")
    assert app.text_panel.segment_count.get() == "2 segments"

    dialogs.answer("open_file", str(studio.voice))
    app.voice_panel.open_clip()
    assert app.voice_panel.voice_path.get() == str(studio.voice)
    assert "voice.wav (4.0 s)" == app.voice_panel.voice_label.get()

    app.emotion_panel.mode_buttons["vector"].invoke()
    raw = [0.9, 0.0, 0.5, 0.0, 0.0, 0.0, 0.6, 0.0]
    for var, value in zip(app.emotion_panel.sliders, raw, strict=True):
        var.set(value)
    root.update()
    expected = normalize_emo_vec(raw)
    assert [float(lbl.cget("text")) for lbl in app.emotion_panel.effective_labels] == [round(v, 2) for v in expected]
    assert "scaled down to 0.80" in app.emotion_panel.sum_text.get()

    app.generate_button.invoke()
    assert str(app.generate_button.cget("state")) == "disabled" and str(app.cancel_button.cget("state")) == "normal"
    wait_until(root, lambda: app.job is None)
    call = app.engine.calls[-1]
    assert call["text"] == "Hi there. Bye now!" and call["voice"] == str(studio.voice)
    assert call["emotion"]["mode"] == "vector"
    assert np.allclose(call["emotion"]["vector"], expected)
    assert abs(sum(call["emotion"]["vector"]) - 0.8) < 1e-9
    assert call["settings"]["seed"] is not None  # a random seed is chosen and recorded
    assert app.progress.get() == 100 and app.stage.get() == "Done"
    assert app.status.get().startswith("Generated ")
    assert len(app.results.history) == 1 and len(app.results.history_panel.tree.get_children()) == 1
    assert len(app.results.waveform.find_withtag("wave")) > 100
    assert dialogs.messages() == []

    target = studio.home / "out" / "take.wav"
    dialogs.answer("save_file", str(target))
    assert app.results.save_wav_dialog() == target
    kind, opts = dialogs.calls[-1]
    assert (
        kind == "save_file"
        and opts["initialfile"].startswith("hi-there-bye-now_")
        and opts["initialfile"].endswith(".wav")
    )
    audio, rate = sf.read(str(target), dtype="int16")
    assert rate == 22050
    assert np.array_equal(audio, app.results.history[0].result.audio)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_event_loop_keeps_running_during_synthesis(display, audio_server, tmp_path):
    studio = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.1))
    app, root = studio.app, studio.root
    try:
        app.text_panel.set_text("One. Two. Three.")
        app.voice_panel.set_clip(studio.voice)
        ticks: list[float] = []

        def tick() -> None:
            ticks.append(time.monotonic())
            if app.job is not None:
                root.after(20, tick)

        stages = set()
        app.generate()
        root.after(20, tick)
        start = time.monotonic()
        while app.job is not None:
            root.update()
            stages.add(app.stage.get())
            time.sleep(0.005)
        took = time.monotonic() - start
        assert took > 1.0  # 13 steps of 0.1 s
        assert len(ticks) >= took / 0.02 * 0.5, f"only {len(ticks)} timer callbacks in {took:.2f} s"
        assert max(np.diff(ticks)) < 0.25
        assert {"Generating speech tokens \u2014 segment 2/3", "Vocoding \u2014 segment 3/3"} <= stages
        assert "elapsed" in app.timing.get() or app.timing.get().startswith("took")
    finally:
        close_studio(studio)


def test_cancel_mid_run_then_generate_again(display, audio_server, tmp_path):
    studio = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.2))
    app, root = studio.app, studio.root
    try:
        app.text_panel.set_text("First sentence. Second sentence. Third sentence.")
        app.voice_panel.set_clip(studio.voice)
        app.generate_button.invoke()
        wait_until(root, lambda: "segment 2/3" in app.stage.get())
        app.cancel_button.invoke()
        took = wait_until(root, lambda: app.job is None)
        assert took < 1.0
        assert app.stage.get() == "Cancelled" and app.status.get() == "Generation cancelled."
        assert app.results.history == [] and studio.dialogs.messages() == []
        assert str(app.generate_button.cget("state")) == "normal"
        app.engine.step_seconds = 0.01
        studio.generate_and_wait()
        assert len(app.results.history) == 1
    finally:
        close_studio(studio)


def test_keyboard_shortcut_generates_and_escape_cancels(display, audio_server, tmp_path):
    studio = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.2))
    app, root = studio.app, studio.root
    try:
        app.text_panel.set_text("Hello. World.")
        app.voice_panel.set_clip(studio.voice)
        root.focus_force()
        root.update()
        root.event_generate("<Control-Return>")
        root.update()
        assert app.job is not None
        root.event_generate("<Escape>")
        wait_until(root, lambda: app.job is None)
        assert app.stage.get() == "Cancelled"
    finally:
        close_studio(studio)


def test_preset_save_and_load_restores_widgets(studio):
    app, dialogs = studio.app, studio.dialogs
    app.voice_panel.set_clip(studio.voice)
    app.emotion_panel.mode.set("vector")
    app.emotion_panel.sliders[1].set(0.7)
    app.emotion_panel.alpha.set(0.4)
    app.advanced.vars["temperature"].set("0.6")
    app.advanced.vars["seed"].set("77")
    dialogs.answer("string", "My Preset")
    path = app.preset_bar.save_dialog()
    assert path == studio.home / "config" / "presets" / "my-preset.json"
    data = json.loads(path.read_text())
    assert data["name"] == "My Preset" and data["voice"] == str(studio.voice)
    assert data["emotion"]["mode"] == "vector" and data["emotion"]["sliders"][1] == 0.7
    assert data["settings"]["temperature"] == 0.6 and data["settings"]["seed"] == 77
    assert app.preset_bar.box.cget("values") == ("My Preset",)

    app.emotion_panel.mode.set("speaker")
    app.emotion_panel.reset_sliders()
    app.advanced.reset()
    app.voice_panel.voice_path.set("")
    app.preset_bar.box.set("My Preset")
    assert app.preset_bar.load(app.preset_bar.name.get())
    assert app.emotion_panel.mode.get() == "vector" and app.emotion_panel.sliders[1].get() == 0.7
    assert app.emotion_panel.alpha.get() == 0.4
    assert app.advanced.get_settings().temperature == 0.6 and app.advanced.get_settings().seed == 77
    assert app.voice_panel.voice_path.get() == str(studio.voice)
    assert dialogs.messages("error", "warning") == []

    dialogs.answer("yesno", True)
    app.preset_bar.delete()
    assert not path.exists() and app.preset_bar.box.cget("values") == ""


def test_history_regenerate_is_exact_and_saves_as_preset(studio):
    app, root, dialogs = studio.app, studio.root, studio.dialogs
    app.text_panel.set_text("Same words again.")
    app.voice_panel.set_clip(studio.voice)
    app.emotion_panel.mode.set("vector")
    app.emotion_panel.sliders[0].set(0.5)
    studio.generate_and_wait()
    first = app.results.history[0]
    app.text_panel.set_text("Something else.")
    app.emotion_panel.mode.set("speaker")
    app.advanced.vars["seed"].set("")
    app.results.history_panel.tree.selection_set("0")
    root.update()
    app.regenerate(app.results.history[0])
    wait_until(root, lambda: app.job is None)
    second = app.results.history[1]
    assert app.text_panel.get_text() == "Same words again." and app.emotion_panel.mode.get() == "vector"
    assert second.request.settings.seed == first.request.settings.seed
    assert np.array_equal(second.result.audio, first.result.audio)
    assert app.engine.calls[-1] == app.engine.calls[-2]

    dialogs.answer("string", "from history")
    path = app.history_to_preset(app.results.history[0])
    data = json.loads(path.read_text())
    assert data["settings"]["seed"] == first.request.settings.seed and data["emotion"]["sliders"][0] == 0.5


def test_last_used_state_is_restored(display, audio_server, tmp_path):
    home = tmp_path / "home"
    s1 = make_studio(home)
    s1.app.text_panel.set_text("Remember me.")
    s1.app.voice_panel.set_clip(s1.voice)
    s1.app.emotion_panel.mode.set("text")
    s1.app.emotion_panel.description.set("calm and warm")
    s1.app.advanced.vars["diffusion_steps"].set("12")
    s1.app.advanced.set_open(True)
    close_studio(s1)
    assert (home / "config" / "state.json").is_file()
    s2 = make_studio(home)
    try:
        app = s2.app
        assert app.text_panel.get_text() == "Remember me."
        assert app.voice_panel.voice_path.get() == str(s1.voice)
        assert app.emotion_panel.mode.get() == "text" and app.emotion_panel.description.get() == "calm and warm"
        assert app.advanced.get_settings().diffusion_steps == 12 and app.advanced.body.winfo_manager() == "pack"
    finally:
        close_studio(s2)


def test_advanced_settings_reset_and_passed_to_engine(studio):
    app = studio.app
    assert app.advanced.body.winfo_manager() == ""  # collapsed
    app.advanced.toggle.invoke()
    assert app.advanced.body.winfo_manager() == "pack"
    for key, value in (
        ("temperature", "1.1"),
        ("top_k", "5"),
        ("num_beams", "1"),
        ("max_text_tokens_per_segment", "3"),
        ("seed", "5"),
    ):
        app.advanced.vars[key].set(value)
    app.text_panel.set_text("one two three four five six seven.")
    app.voice_panel.set_clip(studio.voice)
    pump(studio.root, 0.3)
    assert app.text_panel.segments == ["one two three", "four five six", "seven."]  # preview follows tokens per segment
    studio.generate_and_wait()
    sent = app.engine.calls[-1]["settings"]
    assert (sent["temperature"], sent["top_k"], sent["num_beams"], sent["seed"]) == (1.1, 5, 1, 5)
    app.advanced.reset()
    assert app.advanced.get_settings() == GenerationSettings()


def test_voice_library_add_rename_delete(studio):
    app, dialogs = studio.app, studio.dialogs
    app.voice_panel.set_clip(studio.voice)
    dialogs.answer("string", "Alice")
    voice = app.voice_panel.add_current()
    assert [v.name for v in app.library.list()] == ["Alice"]
    assert app.voice_panel.tree.item(voice.id, "values") == ("Alice",)
    assert app.voice_panel.voice_path.get() == str(voice.clip) and voice.clip.is_file()
    dialogs.answer("string", "Alice 2")
    app.voice_panel.rename_selected()
    assert app.voice_panel.tree.item(voice.id, "values") == ("Alice 2",)
    assert app.voice_panel.voice_label.get() == "Alice 2 (library)"
    dialogs.answer("yesno", False)
    app.voice_panel.delete_selected()
    assert voice.folder.is_dir()
    dialogs.answer("yesno", True)
    app.voice_panel.delete_selected()
    assert not voice.folder.exists() and app.voice_panel.tree.get_children() == ()
    assert app.voice_panel.voice_path.get() == ""


def test_settings_dialog_writes_settings(studio):
    app, dialogs = studio.app, studio.dialogs
    dlg = app.open_settings()
    out = studio.home / "my outputs"
    dialogs.answer("directory", str(out))
    dlg.vars["countdown"].set(1)
    dlg.vars["streaming"].set(True)
    dlg.vars["stream_inside"].set(True)
    dlg._browse("output_dir")
    dlg.apply()
    saved = json.loads((studio.home / "config" / "settings.json").read_text())
    assert saved["output_dir"] == str(out) and saved["countdown"] == 1 and saved["streaming"] is True
    assert saved["stream_inside"] is True
    assert app.results.stream.get() is True and app.output_dir() == out
    assert app.results.streams_inside and app.advanced.entries["num_beams"].instate(["disabled"])


def test_the_beams_note_follows_what_the_loaded_model_can_stream(display, audio_server, tmp_path):
    """With a model that renders whole segments only (IndexTTS-2.5) the Beams field stays as typed."""
    from dataclasses import replace

    class WholeSegments(StandInEngine):
        @property
        def limits(self):
            limits = super().limits
            return None if limits is None else replace(limits, version="2.5", streaming=False)

    studio = make_studio(tmp_path / "home", engine=WholeSegments(step_seconds=0.01))
    app = studio.app
    try:
        app.results.stream.set(True)
        app.results.stream_inside.set(True)
        assert app.results.streams_inside and app.engine.limits is not None
        assert not app.advanced.entries["num_beams"].instate(["disabled"])
        assert not app.advanced.beams_note.winfo_manager()
    finally:
        close_studio(studio)


def test_view_log_window_shows_the_log(studio):
    window = studio.app.open_log()
    assert studio.app.log_path.parent == studio.home / "logs"
    assert "stand-in engine loaded" in window.content()
    window.destroy()


def test_device_check_says_what_it_found(studio):
    import torch

    studio.app.run_device_check(show=True)
    wait_until(studio.root, lambda: studio.dialogs.messages("info"), timeout=60)
    message = studio.dialogs.messages("info")[0]
    if torch.version.cuda is None or not torch.cuda.is_available():
        assert message.startswith("Using the CPU")
    else:
        assert message.startswith("GPU ready")
    assert message == probe(studio.app.device, studio.app.settings.fp16).summary  # core.device: the one check
    assert studio.app.device_note.get() == message


def test_model_folder_missing_shows_first_run_screen(display, audio_server, tmp_path):
    setups = []
    missing = tmp_path / "models"
    studio = make_studio(tmp_path / "home", model_dir=missing, on_setup_models=lambda app: setups.append(app))
    app, root = studio.app, studio.root
    try:
        root.update()
        assert app.first_run_visible and not app.studio.winfo_ismapped()
        assert str(missing) in app.first_run.message.get() and "does not exist" in app.first_run.message.get()
        assert str(app.generate_button.cget("state")) == "disabled"
        app.first_run.setup_button.invoke()
        assert setups == [app]
        missing.mkdir()
        studio.dialogs.answer("directory", str(missing))
        app.choose_model_dir()
        wait_until(root, lambda: app.engine.loaded and app.load_job is None)
        assert not app.first_run_visible and app.studio.winfo_ismapped()
        assert json.loads((studio.home / "config" / "settings.json").read_text())["model_dir"] == str(missing)
        app.text_panel.set_text("Works now.")
        app.voice_panel.set_clip(studio.voice)
        studio.generate_and_wait()
        assert len(app.results.history) == 1
    finally:
        close_studio(studio)


def test_default_setup_hook_explains_what_to_do(display, audio_server, tmp_path):
    studio = make_studio(tmp_path / "home", model_dir=tmp_path / "nowhere")
    try:
        studio.app.first_run.setup_button.invoke()
        (message,) = studio.dialogs.messages("info")
        assert "IndexTTS-2" in message and "Retry" in message
    finally:
        close_studio(studio)


def test_selftest_opens_and_closes_the_window(display, tmp_path, monkeypatch):
    monkeypatch.setenv("INDEXTTS2_DESKTOP_HOME", str(tmp_path / "home"))
    assert selftest(StandInEngine()) == 0
    assert (tmp_path / "home" / "logs" / "indextts2-desktop.log").is_file()
    assert not (tmp_path / "home" / "config" / "state.json").exists()  # selftest leaves no state behind


def test_emotion_modes_reach_the_engine(studio):
    app = studio.app
    app.text_panel.set_text("Feel it.")
    app.voice_panel.set_clip(studio.voice)
    app.emotion_panel.mode_buttons["audio"].invoke()
    assert (
        app.emotion_panel.clip_frame.winfo_manager() == "pack" and app.emotion_panel.vector_frame.winfo_manager() == ""
    )
    studio.dialogs.answer("open_file", str(studio.voice))
    app.emotion_panel._browse()
    app.emotion_panel.alpha.set(0.3)
    app.emotion_panel.random.set(True)
    studio.generate_and_wait()
    sent = app.engine.calls[-1]["emotion"]
    assert (sent["mode"], sent["audio"], sent["alpha"], sent["random"]) == ("audio", str(studio.voice), 0.3, True)
    app.emotion_panel.mode_buttons["text"].invoke()
    app.emotion_panel.description.set("joyful")
    studio.generate_and_wait()
    sent = app.engine.calls[-1]["emotion"]
    assert (sent["mode"], sent["text"]) == ("text", "joyful")
    assert len(EMOTION_NAMES) == len(app.emotion_panel.sliders)


def test_new_library_voice_is_prepared_by_the_engine(display, audio_server, tmp_path):
    class Preparing(StandInEngine):
        prepared: list = []

        def prepare_voice(self, clip):
            self.prepared.append(clip)

    studio = make_studio(tmp_path / "home", engine=Preparing(step_seconds=0.01))
    try:
        app = studio.app
        app.voice_panel.set_clip(studio.voice)
        studio.dialogs.answer("string", "Carol")
        voice = app.voice_panel.add_current()
        wait_until(studio.root, lambda: not app.worker.busy)
        assert app.engine.prepared == [voice.clip]
        assert app.status.get() == "Voice 'Carol' is ready."
    finally:
        close_studio(studio)


def test_run_entry_point_opens_the_window(display, audio_server, tmp_path, monkeypatch):
    import tkinter as tk

    from desktop.app import run
    from desktop.dirs import AppDirs

    seen = {}

    def fake_mainloop(root, n=0):
        root.update()
        seen["title"] = root.title()
        seen["mapped"] = root.winfo_ismapped()
        root.destroy()

    monkeypatch.setattr(tk.Tk, "mainloop", fake_mainloop)
    calls = []
    assert run(standin=True, dirs=AppDirs.under(tmp_path), dialog=lambda kind, **o: calls.append((kind, o))) == 0
    assert seen == {"title": "IndexTTS2 Desktop", "mapped": True} and calls == []


def test_real_engine_without_models_shows_first_run_screen(display, audio_server, tmp_path):
    """The real core.engine.Engine through the same window: an empty model folder leads to the setup screen."""
    from desktop.app import make_engine
    from desktop.dirs import AppDirs

    empty = tmp_path / "models"
    empty.mkdir()
    engine, find_model_dir = make_engine(None, False, AppDirs.under(tmp_path / "home"))
    assert type(engine).__module__ == "core.engine" and find_model_dir is not None
    studio = make_studio(tmp_path / "home", engine=engine, model_dir=empty)
    try:
        wait_until(studio.root, lambda: studio.app.first_run_visible, timeout=60)
        assert "config.yaml is missing" in studio.app.first_run.message.get()
        assert str(empty) in studio.app.first_run.message.get()
        assert str(studio.app.generate_button.cget("state")) == "disabled"
        assert studio.dialogs.messages() == []
    finally:
        close_studio(studio)


# --- one synthesis call, streaming or not -----------------------------------------------------------------------
def test_streaming_and_plain_give_the_same_entry_and_show_the_engines_warnings(display, audio_server, tmp_path):
    """The engine's warnings reach the status line in streaming mode too; both modes give the same History entry."""
    from gui_helpers import warning_engine

    warning = "Segment 1 reached the limit of 1815 speech tokens and may be cut off."
    studio = make_studio(tmp_path / "home", engine=warning_engine(warning, step_seconds=0.01))
    try:
        app = studio.app
        app.text_panel.set_text("One two. Three four.")
        app.voice_panel.set_clip(studio.voice)
        app.advanced.vars["seed"].set("11")
        entries = []
        for stream in (True, False):
            app.results.stream.set(stream)
            studio.generate_and_wait()
            assert studio.dialogs.messages() == []
            assert app.status.get().startswith("Generated ") and app.status.get().endswith(warning), stream
            entries.append(app.results.history[-1])
        streamed, plain = entries
        assert streamed.request.stream and not plain.request.stream
        assert streamed.result.warnings == plain.result.warnings == [warning]
        assert streamed.result.duration == plain.result.duration > 0
        assert np.array_equal(streamed.result.audio, plain.result.audio)
        assert streamed.result.segments == plain.result.segments == ["One two.", "Three four."]
        rows = [app.results.history_panel.tree.item(i, "values") for i in app.results.history_panel.tree.get_children()]
        assert len(rows) == 2
    finally:
        close_studio(studio)


def test_voice_prepared_during_a_synthesis_waits_for_it(display, audio_server, tmp_path):
    """Never two jobs on the engine: a new library voice added while generating is prepared after the job ends."""
    import threading

    events: list[tuple[str, float]] = []
    busy = threading.Event()

    class Recording(StandInEngine):
        def synthesize(self, request, **kwargs):
            busy.set()
            events.append(("synthesis-start", time.monotonic()))
            try:
                return super().synthesize(request, **kwargs)
            finally:
                events.append(("synthesis-end", time.monotonic()))
                busy.clear()

        def prepare_voice(self, clip):
            events.append(("prepare", time.monotonic()))
            assert not busy.is_set(), "prepare_voice ran during a synthesis"
            return super().prepare_voice(clip)

    studio = make_studio(tmp_path / "home", engine=Recording(step_seconds=0.05))
    try:
        app = studio.app
        app.text_panel.set_text("One. Two. Three.")
        app.voice_panel.set_clip(studio.voice)
        job = app.generate()
        assert job is not None
        wait_until(studio.root, lambda: busy.is_set())
        studio.dialogs.answer("string", "Dana")
        voice = app.voice_panel.add_current()  # asks the app to prepare the new voice
        assert app.pending_voices == [voice] and app.engine.prepared == []
        wait_until(studio.root, lambda: app.job is None)
        wait_until(studio.root, lambda: app.engine.prepared == [str(voice.clip)])
        wait_until(studio.root, lambda: not app.worker.busy)
        kinds = [kind for kind, _ in events]
        assert kinds == ["synthesis-start", "synthesis-end", "prepare"]
        assert app.status.get() == "Voice 'Dana' is ready." and app.pending_voices == []
        assert studio.dialogs.messages() == [] and len(app.results.history) == 1
    finally:
        close_studio(studio)


def test_device_option_reaches_the_engine_and_the_status_bar_says_what_it_uses(display, audio_server, tmp_path,
                                                                                 monkeypatch):
    """main.py --device/--model-dir reach desktop.app.run; the app loads on that device with the Settings' fp16;
    the status bar shows the DeviceChoice the engine actually used."""
    import main as main_mod
    from core.device import FP16_ON_CUDA, DeviceChoice
    from desktop import app as app_mod
    from desktop.settings import AppSettings

    seen: dict = {}
    monkeypatch.setattr(app_mod, "run", lambda **kw: seen.update(kw) or 0)
    assert main_mod.main(["--standin", "--device", "CPU", "--model-dir", str(tmp_path)]) == 0
    assert seen == {"standin": True, "model_dir": str(tmp_path), "device": "cpu"}
    assert AppSettings().fp16 is FP16_ON_CUDA and AppSettings.from_dict({"device": "mps"}).device == "mps"

    loads: list[tuple] = []

    class Reporting(StandInEngine):
        device_choice: DeviceChoice | None = None

        def load(self, model_dir=None, device="auto", fp16=None, on_progress=None):
            loads.append((device, fp16))
            super().load(model_dir, device=device, fp16=fp16, on_progress=on_progress)
            self.device_choice = DeviceChoice(device, "cuda", True, True, "GPU ready: Test GPU (float16).", "")

    studio = make_studio(tmp_path / "home", engine=Reporting(step_seconds=0.01), device="cuda")
    try:
        app = studio.app
        assert loads == [("cuda", app.settings.fp16)] and app.settings.device == "auto"  # not saved
        assert app.device_note.get() == "GPU ready: Test GPU (float16)."
    finally:
        close_studio(studio)
