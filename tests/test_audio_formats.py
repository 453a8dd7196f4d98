"""One encoder for every writer (core.audio_formats), ``synth --out`` in every format, and the pronunciation
dictionary in the engine (``Engine.set_glossary``) and in project take keys.

Decoded again, WAV/FLAC are the samples written, MP3 the same number of samples (libsndfile records the encoder
delay), Opus the same duration at 48 kHz. The CLI run is a real subprocess on the tiny model folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_models import single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import SAMPLE_RATE, EngineError, GenerationSettings, SynthesisRequest
from core.audio_formats import FILE_FORMATS, FORMATS, OPUS_RATE, AudioWriter, encode, format_for, write_audio
from core.engine import Engine
from core.project import Project
from core.project.model import Line
from core.project.render import render
from desktop.standin import StandInEngine

REPO = Path(__file__).resolve().parent.parent
SETTINGS = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)
FAST = ["--device", "cpu", "--greedy", "--max-mel-tokens", "8", "--diffusion-steps", "2", "--seed", "0"]


def tone(n: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(n) / rate
    return (8000 * np.sin(2 * np.pi * 330 * t) * np.sin(np.pi * t / t[-1])).astype(np.int16)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    return audio, rate


@pytest.mark.parametrize("rate", [SAMPLE_RATE, 24000])
@pytest.mark.parametrize("n", [1, 12345, 55555])
def test_every_format_decodes_to_the_same_length(n: int, rate: int) -> None:
    audio = tone(n, rate) if n > 1 else np.array([1000], dtype=np.int16)
    for name in FILE_FORMATS:
        decoded, got_rate = decode(encode(audio, name, rate))
        if name == "opus":
            assert got_rate == OPUS_RATE and abs(len(decoded) - n * OPUS_RATE / rate) <= 1, (name, len(decoded))
        else:
            assert got_rate == rate and len(decoded) == n, (name, n, len(decoded))
        if name in ("wav", "flac"):
            np.testing.assert_array_equal(decoded, audio)
    assert encode(audio, "pcm", rate) == audio.astype("<i2").tobytes()


def test_chunked_writing_equals_one_write() -> None:
    audio = tone(40000)
    for name in ("flac", "opus"):
        whole = decode(encode(audio, name))[0]
        buf = io.BytesIO()
        with AudioWriter(buf, FORMATS[name], SAMPLE_RATE) as out:
            for start in range(0, len(audio), 4096):
                out.write(audio[start:start + 4096])
        chunked = decode(buf.getvalue())[0]
        assert len(chunked) == len(whole)
        if name == "flac":
            np.testing.assert_array_equal(chunked, whole)
        else:  # the resampler streamed vs at once: the same signal up to the codec
            assert np.corrcoef(chunked.astype(float), whole.astype(float))[0, 1] > 0.99


def test_write_audio_is_atomic_and_names_what_is_wrong(tmp_path: Path) -> None:
    audio = tone(22050)
    out = write_audio(tmp_path / "a.flac", audio, SAMPLE_RATE)
    assert sf.info(str(out)).format == "FLAC" and sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]
    before = out.read_bytes()
    with pytest.raises(EngineError, match="already exists; choose another name or pass --overwrite"):
        write_audio(out, tone(100), SAMPLE_RATE)
    assert out.read_bytes() == before
    with pytest.raises(EngineError) as err:
        write_audio(tmp_path / "a.aac", audio, SAMPLE_RATE)
    assert str(err.value) == "Cannot write audio to a.aac: the name must end in .wav, .flac, .mp3, .opus."
    assert format_for("x.MP3") is FORMATS["mp3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


# ------------------------------------------------------------------------------------------ engine + CLI


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    e = Engine(cache_dir=tmp_path_factory.mktemp("cache"))
    e.load(tiny_model_dir(), device="cpu")
    return e


def test_synth_out_takes_every_extension(engine: Engine, tmp_path: Path) -> None:
    voice = write_clip(tmp_path / "voice.wav", 1.2, 170.0, seed=3)
    text = "Hello there. Several formats."
    batch = tmp_path / "jobs.jsonl"
    outs = {name: tmp_path / f"out.{name}" for name in ("flac", "mp3", "opus")}
    batch.write_text("".join(json.dumps({"text": text, "voice": str(voice), "out": str(p)}) + "\n"
                             for p in outs.values()), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS_")}
    env.update(OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    run = subprocess.run([sys.executable, str(REPO / "main.py"), "synth", "--model-dir", str(tiny_model_dir()),
                          "--cache-dir", str(tmp_path / "cache"), *FAST, "--batch", str(batch), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = engine.synthesize(SynthesisRequest(text, voice, settings=SETTINGS)).audio
    flac, rate = sf.read(str(outs["flac"]), dtype="int16")
    assert rate == SAMPLE_RATE
    np.testing.assert_array_equal(flac, expected)  # the same audio as the engine's, losslessly
    mp3, rate = sf.read(str(outs["mp3"]), dtype="int16")
    assert sf.info(str(outs["mp3"])).format == "MP3" and rate == SAMPLE_RATE and len(mp3) == len(expected)
    opus, rate = sf.read(str(outs["opus"]), dtype="int16")
    assert rate == OPUS_RATE and abs(len(opus) - len(expected) * OPUS_RATE / SAMPLE_RATE) <= 1

    bad = subprocess.run([sys.executable, str(REPO / "main.py"), "synth", "--model-dir", str(tiny_model_dir()),
                          "--text", text, "--voice", str(voice), "--out", str(tmp_path / "out.aac")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        "error: Cannot write audio to out.aac: the name must end in .wav, .flac, .mp3, .opus."]
    assert not (tmp_path / "out.aac").exists()


def test_engine_uses_the_user_dictionary(engine: Engine, tmp_path: Path) -> None:
    text = "IndexTTS speaks."
    before = engine.split_text(text)
    try:
        engine.set_glossary({"IndexTTS": "Index T T S"})
        after = engine.split_text(text)
        assert after != before and "T T S" in " ".join(after).upper()
        assert engine.glossary_terms("I like indextts.") == {"IndexTTS": "Index T T S"}
        assert engine.glossary_terms("Nothing here.") == {}
        path = tmp_path / "pronunciation.yaml"
        path.write_text("IndexTTS: {zh: 索引}\n", encoding="utf-8")  # Chinese only: English text unchanged
        engine.set_glossary(path)
        assert engine.split_text(text) == before
        path.write_text("- a list\n", encoding="utf-8")
        with pytest.raises(EngineError, match="The pronunciation dictionary cannot be used: glossary .* must be a"):
            engine.set_glossary(path)
        assert engine.glossary_terms("IndexTTS") == {"IndexTTS": {"zh": "索引"}}  # the last good one stays
    finally:
        engine.set_glossary(None)
    assert engine.split_text(text) == before


def test_a_changed_reading_makes_exactly_its_lines_stale(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "voice.wav", 1.0, 180.0)
    lines = [Line("1", "IndexTTS reads this.", str(clip)), Line("2", "Plain words only.", str(clip)),
             Line("3", "Nguyen and IndexTTS.", str(clip))]
    project = Project.create(tmp_path / "book", lines)
    eng = StandInEngine(step_seconds=0.0, load_seconds=0.0)
    eng.load()
    assert render(project, eng).rendered == 3
    first = {line.id: line.active_take for line in project.lines}
    assert {project.status(line) for line in project.lines} == {"current"}

    eng.set_glossary({"IndexTTS": "Index T T S"})
    project.use_glossary(eng.glossary_terms)
    assert [project.status(line) for line in project.lines] == ["stale", "current", "stale"]
    report = render(project, eng)
    assert report.rendered == 2 and report.current == 1
    assert project.lines[1].active_take == first["2"]  # untouched
    assert project.lines[0].active_take.samples > first["1"].samples  # "Index T T S" is more to say

    eng.set_glossary({"IndexTTS": "Index T T S", "Nguyen": "win"})  # a new term only line 3 uses
    assert [project.status(line) for line in project.lines] == ["current", "current", "stale"]
    eng.set_glossary({"IndexTTS": "Index T T S", "Nguyen": "win", "Elsewhere": "else where"})  # used nowhere
    assert [project.status(line) for line in project.lines] == ["current", "current", "stale"]
    project.close()
