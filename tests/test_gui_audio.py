"""Recording and playback with real PortAudio through a PulseAudio null sink (its monitor is the microphone)."""

from __future__ import annotations

import json
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
        assert np.array_equal(app.results.player.source, result.audio)  # the chunks played are the result
        app.results.stop()
    finally:
        close_studio(studio)


def _record_order(app) -> list[tuple]:
    """Events in the order the window saw them: each chunk (and whether the speaker was playing after it), the end."""
    events: list[tuple] = []
    play_chunk, job_done = app.results.play_chunk, app._job_done

    def chunk(c):
        play_chunk(c)
        events.append(("chunk", c.segment, c.index, c.offset, len(c.audio), app.results.player.playing))

    def done(request, result):
        events.append(("done",))
        job_done(request, result)

    app.results.play_chunk, app._job_done = chunk, done
    return events


def test_stream_inside_a_segment_plays_the_first_chunk_before_the_job_ends(display, audio_server, tmp_path):
    """One segment, 'Stream inside segments': playback starts on its first chunk while the engine still works on
    the rest; the samples played are exactly the result; the Beams field says one beam, the status the engine's
    warning; the choice is remembered in settings.json and comes back with the next window."""
    import soxr

    from core.api import STREAM_BEAMS_WARNING

    studio = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.1))
    app, root = studio.app, studio.root
    beams = app.advanced.entries["num_beams"]
    try:
        assert not beams.instate(["disabled"]) and not app.advanced.beams_note.winfo_manager()
        assert app.results.stream_inside_button.instate(["disabled"])  # only with 'Play while generating'
        app.results.stream.set(True)
        app.results.stream_inside.set(True)
        assert app.results.streams_inside and beams.instate(["disabled"])
        note = app.advanced.beams_note
        assert note.winfo_manager() == "grid" and note.cget("text") == "1 while streaming inside segments"
        events = _record_order(app)
        app.text_panel.set_text("Only one sentence here, spoken in pieces")
        app.voice_panel.set_clip(studio.voice)
        mic = Recorder()
        mic.start()
        try:
            studio.generate_and_wait()
            wait_until(root, lambda: not app.results.player.playing, timeout=10)
        finally:
            heard, _ = mic.stop()
        entry = app.results.history[-1]
        result = entry.result
        assert entry.request.settings.stream is True and app.engine.calls[-1]["settings"]["stream"] is True
        assert len(result.segments) == 1
        chunks = [e for e in events if e[0] == "chunk"]
        assert len(chunks) == 4 and [c[2] for c in chunks] == [0, 1, 2, 3]  # four pieces of segment 0
        assert events.index(("done",)) == len(chunks)  # every chunk came before the job ended ...
        assert chunks[0][5] is True  # ... and the speaker was playing from the first one on
        assert [c[3] for c in chunks] == list(np.cumsum([0] + [c[4] for c in chunks[:-1]]))
        player = app.results.player
        assert np.array_equal(player.source, result.audio)  # the samples played are exactly the result
        whole = soxr.resample(result.audio.astype(np.float32) / 32768.0, 22050, player._rate, quality="HQ")
        assert len(player._buf) == len(whole) and np.abs(player._buf - whole).max() < 1e-5  # no seams from chunking
        assert float(np.sqrt(np.mean(heard**2))) > 0.02  # it really came out of the speaker
        assert app.status.get().endswith(STREAM_BEAMS_WARNING.format(beams=3))
        assert app.results._player_entry is entry  # Play after the stream replays the result without reloading
        assert json.loads((studio.home / "config" / "settings.json").read_text())["stream_inside"] is True

        app.results.stream_inside.set(False)  # off again: beams as typed, no note, whole segments
        assert not beams.instate(["disabled"]) and not app.advanced.beams_note.winfo_manager()
        studio.generate_and_wait()
        assert app.engine.calls[-1]["settings"]["stream"] is False
        assert json.loads((studio.home / "config" / "settings.json").read_text())["stream_inside"] is False
        app.results.stream_inside.set(True)
    finally:
        close_studio(studio)
    again = make_studio(tmp_path / "home")
    try:
        assert again.app.results.stream_inside.get() is True and again.app.advanced.entries["num_beams"].instate(
            ["disabled"]
        )
    finally:
        close_studio(again)


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
