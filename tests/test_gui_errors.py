"""Bad input through the GUI: each shows a clear message through the dialog function and the app keeps working."""

from __future__ import annotations

import errno
import json

from gui_helpers import close_studio, make_studio, wait_until

import desktop.widgets.results
from core.api import EngineError


def ready_to_generate(studio, text: str = "Still working.") -> None:
    studio.app.text_panel.set_text(text)
    studio.app.voice_panel.set_clip(studio.voice)


def assert_still_works(studio) -> None:
    """After an error the same window still generates a result."""
    app = studio.app
    before = len(app.results.history)
    ready_to_generate(studio)
    studio.dialogs.clear()
    studio.generate_and_wait()
    assert len(app.results.history) == before + 1 and studio.dialogs.messages() == []


def test_no_voice_chosen(studio):
    studio.app.text_panel.set_text("Who is speaking?")
    assert studio.app.generate() is None
    (message,) = studio.dialogs.messages()
    assert message.startswith("Choose a voice first")
    assert studio.app.job is None and studio.app.engine.calls == []
    assert_still_works(studio)


def test_empty_text(studio):
    studio.app.voice_panel.set_clip(studio.voice)
    studio.app.text_panel.set_text("   \n ")
    studio.app.generate_button.invoke()
    (message,) = studio.dialogs.messages()
    assert message == "There is no text to speak. Type or paste some text first."
    assert studio.app.engine.calls == []
    assert_still_works(studio)


def test_unreadable_clip_is_rejected_when_chosen(studio):
    bad = studio.home / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really audio at all")
    studio.app.voice_panel.set_clip(studio.voice)
    studio.dialogs.answer("open_file", str(bad))
    studio.app.voice_panel.open_clip()
    (message,) = studio.dialogs.messages()
    assert "broken.wav" in message and "not a supported audio file" in message
    assert studio.app.voice_panel.voice_path.get() == str(studio.voice)  # the previous voice stays
    assert_still_works(studio)


def test_clip_that_broke_after_choosing_is_reported_at_generate(studio):
    clip = studio.home / "later.wav"
    clip.write_bytes(studio.voice.read_bytes())
    studio.app.voice_panel.set_clip(clip)
    studio.app.text_panel.set_text("Hello.")
    clip.write_bytes(b"garbage")
    assert studio.app.generate() is None
    (message,) = studio.dialogs.messages()
    assert message.startswith("The voice clip cannot be used.") and "later.wav" in message
    assert_still_works(studio)


def test_engine_error_during_synthesis_is_a_message(studio):
    """An EngineError raised in the worker (here: settings the engine rejects) arrives as a short message."""
    ready_to_generate(studio)
    studio.app.advanced._extra["cfg_rate"] = -1.0
    studio.app.advanced.vars["seed"].set("3")
    assert studio.app.generate() is None  # the GUI validates settings before starting
    (message,) = studio.dialogs.messages()
    assert message == "Advanced settings: The setting 'cfg_rate' must be a number from 0 to 100."
    studio.app.advanced.reset()
    studio.dialogs.clear()

    def out_of_memory(*args, **kwargs):
        raise EngineError("Not enough GPU memory for this text; try shorter text or the CPU.")

    studio.app.engine.synthesize = out_of_memory
    job = studio.app.generate()
    assert job is not None
    wait_until(studio.root, lambda: studio.app.job is None)
    (message,) = studio.dialogs.messages()
    assert message == "Not enough GPU memory for this text; try shorter text or the CPU."
    kind, opts = studio.dialogs.calls[-1]
    assert "Traceback" in opts["details"]  # the details expander holds the technical part
    assert studio.app.stage.get() == "Failed" and studio.app.results.history == []
    del studio.app.engine.synthesize
    assert_still_works(studio)


def test_invalid_advanced_value(studio):
    ready_to_generate(studio)
    studio.app.advanced.vars["top_k"].set("lots")
    assert studio.app.generate() is None
    assert studio.dialogs.messages() == ["Advanced settings: 'Top-k (0 = off)' must be a whole number (got 'lots')."]
    studio.app.advanced.vars["top_k"].set("30")
    assert_still_works(studio)


def test_invalid_preset_files(studio):
    app, dialogs = studio.app, studio.dialogs
    garbage = studio.home / "garbage.json"
    garbage.write_text("{ not json", encoding="utf-8")
    dialogs.answer("open_file", str(garbage))
    assert app.preset_bar.import_file() is False
    (message,) = dialogs.messages()
    assert message.startswith("Could not import garbage.json: garbage.json is not valid JSON (line 1")

    dialogs.clear()
    other = studio.home / "other.json"
    other.write_text(json.dumps({"hello": 1}), encoding="utf-8")
    dialogs.answer("open_file", str(other))
    assert app.preset_bar.import_file() is False
    assert "is not an IndexTTS2 Desktop preset" in dialogs.messages()[0]

    dialogs.clear()
    bad_values = studio.home / "bad-values.json"
    bad_values.write_text(
        json.dumps({"format": "indextts2-desktop-preset", "name": "x", "settings": {"top_p": 7}}), encoding="utf-8"
    )
    dialogs.answer("open_file", str(bad_values))
    assert app.preset_bar.import_file() is False
    assert "invalid generation settings" in dialogs.messages()[0] and "top_p" in dialogs.messages()[0]

    dialogs.clear()
    broken = studio.home / "config" / "presets" / "broken.json"
    broken.write_text("[1, 2", encoding="utf-8")
    app.preset_bar.refresh()
    assert app.preset_bar.box.cget("values") == ""  # unreadable presets are not offered
    assert app.preset_bar.load("broken") is False
    assert dialogs.messages()[0].startswith("Could not load the preset 'broken': broken.json is not valid JSON")
    assert_still_works(studio)


def test_corrupt_state_and_settings_files_are_set_aside(display, audio_server, tmp_path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "state.json").write_text("{{{", encoding="utf-8")
    (home / "config" / "settings.json").write_bytes(b"\xff\xfe\x00garbage")
    studio = make_studio(home)
    try:
        warnings = studio.dialogs.messages("warning")
        assert len(warnings) == 2
        assert any("state.json is not valid JSON" in w and "state.corrupt.json" in w for w in warnings)
        assert any("settings.json is not a text file" in w for w in warnings)
        assert (home / "config" / "state.corrupt.json").read_text() == "{{{"
        assert not (home / "config" / "state.json").exists()
        assert_still_works(studio)
    finally:
        close_studio(studio)


def test_engine_load_failure_shows_first_run_screen(display, audio_server, tmp_path):
    from core.api import EngineError
    from desktop.standin import StandInEngine

    class Broken(StandInEngine):
        def load(self, model_dir=None, device="auto", fp16=False, on_progress=None):
            raise EngineError(f"Missing file gpt.pth in {model_dir}.")

    models = tmp_path / "models"
    models.mkdir()
    studio = make_studio(tmp_path / "home", engine=Broken(), model_dir=models)
    try:
        wait_until(studio.root, lambda: studio.app.first_run_visible)
        assert "Missing file gpt.pth" in studio.app.first_run.message.get()
        assert studio.dialogs.messages() == []
    finally:
        close_studio(studio)


def test_unwritable_output_folder(studio):
    app, dialogs = studio.app, studio.dialogs
    ready_to_generate(studio)
    studio.generate_and_wait()
    blocker = studio.home / "not-a-folder"
    blocker.write_text("I am a file")
    app.settings.output_dir = str(blocker / "out")
    assert app.results.quick_save() is None
    (message,) = dialogs.messages()
    assert message.startswith("Could not save ") and "not-a-folder" in message
    app.settings.output_dir = str(studio.home / "good")
    dialogs.clear()
    saved = app.results.quick_save()
    assert saved is not None and saved.is_file() and dialogs.messages() == []
    again = app.results.quick_save()  # never overwrites: a numbered name
    assert again != saved and again.is_file() and again.name.endswith("~2.wav")


def test_disk_full_while_saving(studio, monkeypatch):
    app, dialogs = studio.app, studio.dialogs
    ready_to_generate(studio)
    studio.generate_and_wait()
    target = studio.home / "full" / "x.wav"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    original = desktop.widgets.results.AudioWriter.write
    monkeypatch.setattr(desktop.widgets.results.AudioWriter, "write", lambda self, audio: full(target))
    assert app.results.save_wav(target) is None
    (message,) = dialogs.messages()
    assert message == f"Could not save x.wav. The disk is full ({target}). Free some space or choose another folder."
    assert list(target.parent.iterdir()) == []  # the temp file was removed
    monkeypatch.setattr(desktop.widgets.results.AudioWriter, "write", original)
    dialogs.clear()
    assert app.results.save_wav(target) == target and target.is_file()


def test_save_before_any_result(studio):
    assert studio.app.results.save_wav_dialog() is None
    assert studio.dialogs.messages() == ["There is no result to save yet. Generate something first."]


def test_callback_exception_becomes_a_message_not_a_crash(studio):
    def boom():
        raise ZeroDivisionError("bad math")

    studio.root.after(0, boom)
    wait_until(studio.root, lambda: studio.dialogs.messages())
    ((kind, opts),) = studio.dialogs.calls
    assert opts["title"] == "Unexpected error"
    log_file = studio.app.log_path
    assert opts["message"] == (
        f"Something went wrong inside the app (an internal error). The details were written to the log file {log_file}."
    )
    assert "ZeroDivisionError: bad math" in opts["details"]
    assert "ZeroDivisionError" in studio.app.log_path.read_text()
    studio.dialogs.calls.clear()  # expected here; the fixture would flag it otherwise
    assert_still_works(studio)


def test_error_dialog_has_a_details_expander(studio):
    from desktop.dialogs import ErrorDialog

    box = ErrorDialog(studio.root, "Generate", "Short message.", "Traceback (most recent call last):\n  boom")
    studio.root.update()
    assert not box._details.winfo_ismapped()  # details start collapsed
    box._toggle.invoke()
    studio.root.update()
    assert box._details.winfo_ismapped() and box._details.get("1.0", "end-1c").startswith("Traceback")
    assert box._toggle.cget("text").startswith("Details \u25be")
    box._copy("Short message.", "details here")
    assert studio.root.clipboard_get() == "Short message.\n\ndetails here"
    box._toggle.invoke()
    studio.root.update()
    assert not box._details.winfo_ismapped()
    box.destroy()


# --- the engine API's errors, through the GUI -------------------------------------------------------------------
def test_no_speech_in_streaming_mode_is_the_engines_error_not_a_history_entry(display, audio_server, tmp_path):
    """A text the model renders as no speech: the engine's NO_SPEECH message, no 0.0 s History entry."""
    from gui_helpers import silent_engine

    from core.api import NO_SPEECH

    studio = make_studio(tmp_path / "home", engine=silent_engine(step_seconds=0.01))
    try:
        app = studio.app
        ready_to_generate(studio, "Hmm.")
        for stream in (True, False):
            app.results.stream.set(stream)
            studio.dialogs.clear()
            studio.generate_and_wait()
            assert studio.dialogs.messages() == [NO_SPEECH], f"stream={stream}"
            assert app.results.history == [] and len(app.results.history_panel.tree.get_children()) == 0
            assert app.stage.get() == "Failed" and app.status.get() == "Generation failed."
        studio.dialogs.clear()
    finally:
        close_studio(studio)


def test_setting_beyond_the_models_limit_names_the_field_and_starts_nothing(studio):
    """max_mel_tokens above the loaded model's 1815: the Advanced panel's label and the allowed range."""
    app = studio.app
    ready_to_generate(studio)
    assert app.engine.limits is not None and app.engine.limits.max_mel_tokens == 1815
    app.advanced.vars["max_mel_tokens"].set("5000")
    assert app.generate() is None
    (message,) = studio.dialogs.messages()
    assert message == (
        "Advanced settings: Max speech tokens must be a whole number from 1 to 1815 (the loaded model's limit)."
    )
    assert app.job is None and app.engine.calls == [] and app.results.history == []
    app.advanced.vars["max_mel_tokens"].set("1815")  # the limit itself is fine
    studio.dialogs.clear()
    studio.generate_and_wait()
    assert studio.dialogs.messages() == [] and len(app.results.history) == 1
    assert app.engine.calls[-1]["settings"]["max_mel_tokens"] == 1815


def test_a_bug_in_a_job_is_an_internal_error_naming_the_log_file(studio):
    """An exception that is not an EngineError: logged with its traceback, shown as an internal error."""
    app = studio.app
    ready_to_generate(studio)

    def broken(*args, **kwargs):
        raise KeyError("oops")

    app.engine.synthesize = broken
    studio.generate_and_wait()
    (message,) = studio.dialogs.messages()
    assert message.startswith("Something went wrong inside the app (an internal error).")
    assert str(app.log_path) in message
    log_text = app.log_path.read_text()
    assert "Traceback" in log_text and "KeyError: 'oops'" in log_text
    del app.engine.synthesize
    assert_still_works(studio)
