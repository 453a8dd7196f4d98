"""Unit tests of the desktop modules that need no window: emotion maths, stand-in engine, files, recording helpers."""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
import tkinter as tk
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gui_helpers import silent_engine, wait_until, write_tone

from core.api import (
    EMO_BIAS,
    NO_SPEECH,
    STREAM_BEAMS_WARNING,
    Cancelled,
    Emotion,
    EngineError,
    GenerationSettings,
    ModelLimits,
    Progress,
    SettingError,
    SynthesisRequest,
    normalize_emo_vec,
)
from desktop.dialogs import describe_error
from desktop.dirs import HOME_ENV, AppDirs, app_dirs
from desktop.jsonstore import JsonFileError, atomic_write_text, read_json
from desktop.recorder import finish_take, take_warnings, trim_silence
from desktop.settings import AppSettings, Preset, PresetError, PresetStore, StateFiles
from desktop.standin import StandInEngine
from desktop.voice_library import VoiceError, VoiceLibrary, check_clip
from desktop.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


# --- emotion vector ---------------------------------------------------------------------------------------------
def test_normalize_emo_vec_matches_the_webui_rule():
    # below the cap only the bias applies: 0.4 * 0.9375 (happy) = 0.375, 0.2 * 0.5625 (calm) = 0.1125
    assert normalize_emo_vec([0.4, 0, 0, 0, 0, 0, 0, 0.2]) == pytest.approx([0.375, 0, 0, 0, 0, 0, 0, 0.1125])
    # all ones: biased sum 6.9375 > 0.8, so every value is scaled by 0.8 / 6.9375
    out = normalize_emo_vec([1.0] * 8)
    assert out == pytest.approx([b * 0.8 / 6.9375 for b in EMO_BIAS])
    assert sum(out) == pytest.approx(0.8)
    # without the bias only the cap applies
    assert normalize_emo_vec([0.5, 0.5, 0, 0, 0, 0, 0, 0], apply_bias=False) == pytest.approx(
        [0.4, 0.4, 0, 0, 0, 0, 0, 0]
    )
    assert normalize_emo_vec([0.3, 0, 0, 0, 0, 0, 0, 0], apply_bias=False) == [0.3, 0, 0, 0, 0, 0, 0, 0]
    assert normalize_emo_vec([0.0] * 8) == [0.0] * 8


# --- stand-in engine --------------------------------------------------------------------------------------------
@pytest.fixture
def engine() -> StandInEngine:
    e = StandInEngine(step_seconds=0.005, load_seconds=0)
    e.load()
    return e


def test_standin_splits_on_sentence_punctuation(engine):
    assert engine.split_text("One. Two! Three? 四。五！\nSix") == ["One.", "Two!", "Three?", "四。", "五！", "Six"]
    assert engine.split_text("a b c d e, f g", max_tokens=3) == ["a b c", "d e,", "f g"]
    assert engine.split_text("a b, c d e f g h", max_tokens=3) == ["a b, c", "d e f", "g h"]
    assert engine.split_text("a b c d e f g", max_tokens=3) == ["a b c", "d e f", "g"]
    assert engine.split_text("   ") == []


def say(text, voice, **kw) -> SynthesisRequest:
    return SynthesisRequest(text, voice, **kw)


def test_standin_rejects_bad_input(engine, tmp_path):
    voice = write_tone(tmp_path / "v.wav")
    with pytest.raises(EngineError, match="text is empty"):
        engine.synthesize(say("  ", voice))
    with pytest.raises(EngineError, match="Voice clip not found"):
        engine.synthesize(say("Hi.", tmp_path / "missing.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    with pytest.raises(EngineError, match="not a supported audio file"):
        engine.synthesize(say("Hi.", bad))
    with pytest.raises(SettingError, match="top_p") as info:
        engine.synthesize(say("Hi.", voice, settings=GenerationSettings(top_p=2.0)))
    assert info.value.setting == "top_p"
    with pytest.raises(EngineError, match="all zeros"):
        engine.synthesize(say("Hi.", voice, emotion=Emotion(mode="vector", vector=(0.0,) * 8)))
    with pytest.raises(EngineError, match="Model folder not found"):
        StandInEngine().load(tmp_path / "no-models")
    with pytest.raises(EngineError, match="not loaded"):
        StandInEngine().synthesize(say("Hi.", voice))


def test_standin_checks_the_model_limits(engine, tmp_path):
    """Like the real engine, the stand-in knows its limits after load and checks requests against them."""
    voice = write_tone(tmp_path / "v.wav")
    assert StandInEngine().limits is None and engine.limits == ModelLimits(1815, 600)
    with pytest.raises(SettingError, match="loaded model's limit") as info:
        engine.synthesize(say("Hi.", voice, settings=GenerationSettings(max_mel_tokens=5000)))
    assert info.value.setting == "max_mel_tokens" and engine.calls == []


def test_standin_without_speech_raises_the_engines_no_speech_error(tmp_path):
    engine = silent_engine(step_seconds=0.005, load_seconds=0)
    engine.load()
    voice = write_tone(tmp_path / "v.wav")
    for on_segment in (None, lambda seg: None):
        with pytest.raises(EngineError) as info:
            engine.synthesize(say("Hello.", voice), on_segment=on_segment)
        assert str(info.value) == NO_SPEECH


def test_standin_progress_audio_and_seed(engine, tmp_path):
    voice = write_tone(tmp_path / "v.wav")
    reports: list[Progress] = []
    settings = GenerationSettings(seed=7, interval_silence_ms=100)
    result = engine.synthesize(say("One two. Three.", voice, settings=settings), on_progress=reports.append)
    fractions = [p.fraction for p in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {p.segments for p in reports} == {2} and {p.segment for p in reports if p.stage == "Vocoding"} == {1, 2}
    assert result.segments == ["One two.", "Three."] and result.audio.dtype == np.int16
    segs: list = []
    streamed = engine.synthesize(say("One two. Three.", voice, settings=settings), on_segment=segs.append)
    assert np.array_equal(streamed.audio, result.audio) and streamed.segments == result.segments
    assert [s.index for s in segs] == [0, 1] and all(s.count == 2 for s in segs)
    assert len(result.audio) == len(segs[0].audio) + 2205 + len(segs[1].audio)
    assert np.array_equal(result.audio, np.concatenate([segs[0].audio, np.zeros(2205, np.int16), segs[1].audio]))
    other_settings = GenerationSettings(seed=8, interval_silence_ms=100)
    other = engine.synthesize(say("One two. Three.", voice, settings=other_settings))
    assert not np.array_equal(result.audio, other.audio)


def test_standin_streams_inside_segments_as_the_engine_does(engine, tmp_path):
    """settings.stream: several chunks per segment, together exactly the result (silences included), the same audio
    as without it, and the engine's one-beam warning; without it one chunk per segment."""
    voice = write_tone(tmp_path / "v.wav")
    plain_settings = GenerationSettings(seed=3, interval_silence_ms=100)
    plain_chunks: list = []
    plain = engine.synthesize(say("One two. Three.", voice, settings=plain_settings), on_chunk=plain_chunks.append)
    assert [(c.segment, c.index, c.last) for c in plain_chunks] == [(0, 0, True), (1, 0, True)] and not plain.warnings
    chunks: list = []
    streamed = engine.synthesize(say("One two. Three.", voice, settings=GenerationSettings(
        seed=3, interval_silence_ms=100, stream=True)), on_chunk=chunks.append)
    assert [(c.segment, c.index) for c in chunks] == [(s, i) for s in (0, 1) for i in range(4)]
    assert [c.last for c in chunks] == [False, False, False, True] * 2
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), streamed.audio)
    assert [c.offset for c in chunks] == list(np.cumsum([0] + [len(c.audio) for c in chunks[:-1]]))
    assert np.array_equal(streamed.audio, plain.audio)
    assert streamed.warnings == [STREAM_BEAMS_WARNING.format(beams=3)]
    one_beam = engine.synthesize(say("One.", voice, settings=GenerationSettings(stream=True, num_beams=1)))
    assert one_beam.warnings == []


def test_standin_honours_cancel_within_a_tenth_of_a_second(tmp_path):
    engine = StandInEngine(step_seconds=2.0, load_seconds=0)
    engine.load()
    voice = write_tone(tmp_path / "v.wav")
    cancel = threading.Event()
    outcome: dict = {}

    def run() -> None:
        try:
            engine.synthesize(say("A long one. Another.", voice), cancel=cancel)
        except Cancelled as exc:
            outcome["at"] = time.monotonic()
            outcome["exc"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    cancel.set()
    set_at = time.monotonic()
    thread.join(2)
    assert isinstance(outcome["exc"], Cancelled) and isinstance(outcome["exc"], EngineError)
    assert outcome["at"] - set_at < 0.1


# --- files: presets, settings, voices ---------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_preset_store_round_trip_and_invalid_files(tmp_path):
    store = PresetStore(tmp_path / "presets")
    preset = Preset(
        name="Calm narrator",
        voice="/v.wav",
        emotion={"mode": "vector", "sliders": [0.1] * 8},
        settings=GenerationSettings(seed=3).to_dict(),
    )
    path = store.save(preset)
    assert path.name == "calm-narrator.json"
    assert store.load("Calm narrator") == preset and store.names() == ["Calm narrator"]
    (tmp_path / "presets" / "junk.json").write_text("[", encoding="utf-8")
    assert store.names() == ["Calm narrator"]
    with pytest.raises(PresetError, match=r"junk.json is not valid JSON \(line 1"):
        store.load_file(tmp_path / "presets" / "junk.json")
    with pytest.raises(JsonFileError, match="does not exist"):
        read_json(tmp_path / "nothing.json")
    with pytest.raises(PresetError, match="does not exist"):
        store.load("Nobody")
    bad = {**preset.to_json(), "settings": {"num_beams": 0}}
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(PresetError, match="num_beams"):
        store.load_file(tmp_path / "b.json")
    store.delete("Calm narrator")
    assert store.names() == []


def test_state_files_quarantine_corrupt_json(tmp_path):
    files = StateFiles(tmp_path)
    files.save_settings(AppSettings(device="cuda", countdown=5))
    assert files.load_settings() == AppSettings(device="cuda", countdown=5)
    (tmp_path / "state.json").write_text("not json")
    assert files.load_state() == {}
    assert (tmp_path / "state.corrupt.json").read_text() == "not json"
    assert "state.json is not valid JSON" in files.notes[0]
    (tmp_path / "settings.json").write_text(json.dumps({"device": "tpu", "unknown": 1}))
    assert files.load_settings().device == "auto"


def test_voice_library(tmp_path):
    lib = VoiceLibrary(tmp_path / "voices")
    flac = tmp_path / "v.flac"
    sf.write(str(flac), np.zeros(22050, dtype=np.float32) + 0.1, 22050)
    voice = lib.add_file("Bob", flac)
    assert voice.clip.suffix == ".wav" and sf.info(str(voice.clip)).frames == 22050
    renamed = lib.rename(voice.id, "Robert")
    assert renamed.name == "Robert" and renamed.created == voice.created and lib.find_by_name("Robert").id == voice.id
    recorded = lib.add_audio("Mic", np.full(100, 0.2, dtype=np.float32), 22050)
    assert [v.name for v in lib.list()] == ["Mic", "Robert"]
    lib.delete(recorded.id)
    assert [v.name for v in lib.list()] == ["Robert"]
    with pytest.raises(VoiceError, match="needs a name"):
        lib.rename(voice.id, "  ")
    with pytest.raises(VoiceError, match="does not exist"):
        check_clip(tmp_path / "none.wav")
    with pytest.raises(VoiceError, match="is a folder"):
        check_clip(tmp_path)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 22050)
    with pytest.raises(VoiceError, match="contains no audio"):
        check_clip(empty)


def test_dirs_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    dirs = app_dirs().ensure()
    assert dirs == AppDirs.under(tmp_path)
    assert dirs.presets.is_dir() and dirs.voices.is_dir() and dirs.log == tmp_path / "logs"
    monkeypatch.delenv(HOME_ENV)
    assert "IndexTTS2 Desktop" in str(app_dirs().config) and "IndexTTS2 Desktop" in str(app_dirs().cache)


def test_describe_error_words():
    full = OSError(errno.ENOSPC, "No space left on device", "/out/a.wav")
    assert describe_error(full)[0] == "The disk is full (/out/a.wav). Free some space or choose another folder."
    denied = PermissionError(errno.EACCES, "Permission denied", "/root/x")
    assert describe_error(denied)[0] == "Permission denied (/root/x). Choose a folder you can write to."
    assert describe_error(EngineError("Model missing."))[0] == "Model missing."
    try:
        raise KeyError("x")
    except KeyError as exc:
        message, details = describe_error(exc)
    assert message.startswith("Something went wrong inside the app") and "KeyError" in details


# --- recording helpers ------------------------------------------------------------------------------------------
def test_trim_and_warnings():
    rate = 16000
    t = np.arange(rate * 4) / rate
    speech = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    padded = np.concatenate([np.zeros(rate), speech, np.zeros(2 * rate)]).astype(np.float32)
    trimmed = trim_silence(padded, rate)
    assert abs(len(trimmed) - (len(speech) + 2 * int(0.1 * rate))) <= int(0.02 * rate)
    assert take_warnings(speech, rate) == []
    assert any(w.startswith("Very quiet") for w in take_warnings(speech * 0.02, rate))
    assert any(w.startswith("Clipped") for w in take_warnings(np.clip(speech * 3, -1, 1), rate))
    assert any(w.startswith("Too short (1.0 s)") for w in take_warnings(speech[:rate], rate))
    assert any(w.startswith("Long (25 s)") for w in take_warnings(np.tile(speech, 7)[: 25 * rate], rate))
    take = finish_take(padded * 1.0, rate, target_rate=22050)
    assert take.sample_rate == 22050 and abs(take.seconds - 4.2) < 0.05 and take.warnings == []


# --- worker -----------------------------------------------------------------------------------------------------
def test_worker_delivers_on_the_tk_thread(display):
    root = tk.Tk()
    try:
        worker = Worker(root)
        seen: list = []

        def job_fn(job, post):
            for i in range(3):
                post("step", i)
            return threading.current_thread().name

        worker.start(
            "t",
            job_fn,
            on_done=lambda r: seen.append(("done", r, threading.current_thread().name)),
            on_error=seen.append,
            on_message=lambda k, p: seen.append((k, p, threading.current_thread().name)),
        )
        wait_until(root, lambda: not worker.busy)
        main = threading.main_thread().name
        assert seen == [("step", 0, main), ("step", 1, main), ("step", 2, main), ("done", "job-t", main)]
        errors: list = []
        worker.start("e", lambda job, post: 1 / 0, on_done=errors.append, on_error=errors.append)
        wait_until(root, lambda: not worker.busy)
        assert isinstance(errors[0], ZeroDivisionError)
        worker.close()
    finally:
        root.destroy()


# --- README screenshots -----------------------------------------------------------------------------------------
def test_screenshot_tool_writes_pngs_of_the_real_windows(display, audio_server, tmp_path):
    """tools/screenshots.py: every view in the light and the dark theme, PNGs that Pillow decodes back."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import screenshots
    finally:
        sys.path.remove(str(ROOT / "tools"))
    screenshots.take_screenshots(tmp_path)
    views = ("main-window", "projects", "record-dialog", "model-setup")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{v}-{t}.png" for v in views
                                                                     for t in ("light", "dark"))
    for view in views:
        light, dark = (Image.open(tmp_path / f"{view}-{t}.png") for t in ("light", "dark"))
        assert light.format == "PNG" and light.size == dark.size
        light_px, dark_px = (np.asarray(im.convert("RGB"), dtype=np.float64) for im in (light, dark))
        assert light_px.mean() > 150 and dark_px.mean() < 100, (view, light_px.mean(), dark_px.mean())
        assert light_px.std() > 10  # a real picture, not a blank window
    assert Image.open(tmp_path / "main-window-light.png").size == (1240, 700)
    width, height = Image.open(tmp_path / "record-dialog-dark.png").size
    assert width >= 500 and height >= 300
