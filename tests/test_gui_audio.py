"""Recording and playback with real PortAudio through a PulseAudio null sink (its monitor is the microphone)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
from gui_helpers import close_studio, make_studio, pump, wait_until

from desktop.audio import AudioUnavailable, pick_device
from desktop.player import Player
from desktop.recorder import Recorder
from desktop.standin import StandInEngine


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def tone(seconds: float, freq: float, rate: int = 22050, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def test_record_dialog_records_the_monitor_and_saves_a_voice(studio):
    app, root = studio.app, studio.root
    app.settings.countdown = 1
    dialog = app.open_recorder()
    assert dialog.phase.get() == "idle" and "System default" in dialog.device_box.cget("values"), (
        studio.dialogs.messages()
    )
    speaker = Player()
    speaker.load(tone(6.0, 440.0), 22050)
    speaker.play()
    try:
        dialog.record_button.invoke()
        assert dialog.phase.get() == "countdown" and dialog.status.get() == "Recording starts in 1\u2026"
        wait_until(root, lambda: dialog.phase.get() == "recording", timeout=3)
        levels, bars = [], []
        while dialog.recorder is not None and dialog.recorder.seconds < 3.6:
            root.update()
            levels.append(dialog.level)
            bars.append(dialog.meter.coords("bar")[2])
            time.sleep(0.01)
        assert 0.3 < max(levels) < 0.99  # the live meter followed the tone (amplitude 0.5)
        assert max(bars) > 0.3 * dialog.meter.winfo_width()
        native = dialog.recorder.device.samplerate
        dialog.stop_button.invoke()
    finally:
        speaker.stop()
    take = dialog.take
    assert native != 22050  # recorded at the device's own rate, then resampled
    assert take.sample_rate == 22050 and 3.0 <= take.seconds <= 4.2
    assert abs(dominant_hz(take.audio, take.sample_rate) - 440.0) < 3.0
    assert take.warnings == []
    assert dialog.phase.get() == "done" and str(dialog.save_button.cget("state")) == "normal"
    dialog.name.set("Tone speaker")
    voice = dialog.save()
    assert voice is not None and not dialog.winfo_exists()
    assert app.voice_panel.voice_path.get() == str(voice.clip)
    audio, rate = sf.read(str(voice.clip))
    assert rate == 22050 and abs(len(audio) / rate - take.seconds) < 0.01
    app.text_panel.set_text("Now in the recorded voice.")
    studio.generate_and_wait()
    assert app.engine.calls[-1]["voice"] == str(voice.clip)


def test_silent_microphone_warns(studio):
    studio.app.settings.countdown = 0
    dialog = studio.app.open_recorder()
    dialog.start()
    assert dialog.phase.get() == "recording"
    pump(studio.root, 0.6)
    dialog.stop()
    assert dialog.phase.get() == "done"
    assert dialog.take.audio.size == 0 and "Nothing but silence" in dialog.status.get()
    assert str(dialog.save_button.cget("state")) == "disabled"
    dialog.close()


def test_play_result_moves_cursor_and_sounds(studio):
    app, root = studio.app, studio.root
    app.text_panel.set_text("Play me back. Twice as long.")
    app.voice_panel.set_clip(studio.voice)
    studio.generate_and_wait()
    mic = Recorder()
    mic.start()
    try:
        app.results.play_button.invoke()
        assert app.results.play_button.cget("text").endswith("Pause")
        wait_until(root, lambda: app.results.player.position > 0.5, timeout=5)
        assert app.results.waveform.cursor_x() > 0
        shown, total = app.results.position.get().removesuffix(" s").split(" / ")
        assert float(shown) > 0 and float(total) == round(app.results.current.result.duration, 1)
        app.results.play_button.invoke()  # pause
        paused_at = app.results.player.position
        pump(root, 0.3)
        assert not app.results.player.playing and app.results.player.position == paused_at
        app.results.play_button.invoke()  # resume
        wait_until(root, lambda: not app.results.player.playing, timeout=10)
    finally:
        audio, rate = mic.stop()
    assert app.results.player.position == pytest.approx(app.results.current.result.duration, abs=0.05)
    assert float(np.sqrt(np.mean(audio**2))) > 0.02  # the result really came out of the speaker
    app.results.stop()
    assert app.results.player.position == 0 and app.results.waveform.cursor_x() == 0


def test_streaming_playback_starts_before_synthesis_ends(display, audio_server, tmp_path):
    studio = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.15))
    app, root = studio.app, studio.root
    try:
        app.results.stream.set(True)
        app.text_panel.set_text("First part. Second part. Third part.")
        app.voice_panel.set_clip(studio.voice)
        app.generate()
        wait_until(root, lambda: app.results.player is not None and app.results.player.playing, timeout=10)
        assert app.job is not None  # still synthesising segment 2/3
        wait_until(root, lambda: app.job is None, timeout=10)
        result = app.results.history[0].result
        assert result.segments == ["First part.", "Second part.", "Third part."]
        gap = int(0.2 * 22050)
        seg_len = (len(result.audio) - 2 * gap) // 3
        assert len(result.audio) == 3 * seg_len + 2 * gap
        assert not result.audio[seg_len : seg_len + gap].any()
        assert app.results.player.duration == pytest.approx(result.duration, abs=0.01)
        app.results.stop()
    finally:
        close_studio(studio)


@pytest.fixture
def no_audio_devices(monkeypatch):
    """Make every device query fail as PortAudio does without any audio device."""
    from desktop.audio import sounddevice

    sd = sounddevice()

    def fail(*args, **kwargs):
        raise sd.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sd, "query_devices", fail)
    return sd


def test_no_microphone_gives_a_clear_message(studio, no_audio_devices):
    with pytest.raises(AudioUnavailable, match="No microphone found"):
        pick_device("input")
    dialog = studio.app.open_recorder()
    (message,) = studio.dialogs.messages()
    assert message.startswith("Could not list the audio devices: Error querying device -1")
    studio.dialogs.clear()
    dialog.countdown_seconds = 0
    dialog.start()
    (message,) = studio.dialogs.messages()
    assert message.startswith("No microphone found. Connect one")
    assert dialog.phase.get() == "error" and str(dialog.record_button.cget("state")) == "normal"
    dialog.close()
    studio.dialogs.clear()
    studio.app.text_panel.set_text("The app still works.")
    studio.app.voice_panel.set_clip(studio.voice)
    studio.generate_and_wait()
    assert len(studio.app.results.history) == 1 and studio.dialogs.messages() == []


def test_no_speaker_gives_a_clear_message(studio, no_audio_devices):
    app = studio.app
    app.text_panel.set_text("Nobody hears this.")
    app.voice_panel.set_clip(studio.voice)
    studio.generate_and_wait()
    app.results.play_button.invoke()
    (message,) = studio.dialogs.messages()
    assert message.startswith("No speaker or headphones found.")
    studio.dialogs.clear()
    app.voice_panel.play_current()
    assert studio.dialogs.messages()[0].startswith("No speaker or headphones found.")
    dlg = app.open_settings()
    assert dlg.audio_note.startswith("No audio devices: Could not list the audio devices")
    dlg.destroy()
    studio.dialogs.clear()
    assert app.results.quick_save().is_file() and studio.dialogs.messages() == []
