"""``python main.py synth`` as a user runs it: a subprocess on the tiny upstream-layout model folder.

Successful runs must write a valid 22050 Hz mono PCM16 WAV equal to what the engine itself produces for the same
settings (so every option reaches the engine); bad input must exit non-zero with one clear line on stderr and
leave no file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_models import mirror_model_dir, single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import Emotion, GenerationSettings, SynthesisRequest
from core.config import load_config
from core.engine import Engine

REPO = Path(__file__).resolve().parent.parent
TEXT = "Hello there. This is the command line speaking."
VECTOR = (0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.2)
FAST = ["--device", "cpu", "--greedy", "--max-mel-tokens", "8", "--diffusion-steps", "2", "--seed", "0"]
SETTINGS = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_clip(root / "voice.wav", 1.2, 170.0, seed=3)
    write_clip(root / "emotion.wav", 1.0, 260.0, seed=4)
    (root / "corrupt.wav").write_text("this is a text file, not audio\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def engine(work: Path) -> Engine:
    """The engine in this process, sharing the CLI's voice cache (which it thereby also checks)."""
    e = Engine(cache_dir=work / "voice_cache")
    e.load(tiny_model_dir(), device="cpu")
    return e


def synth(
    work: Path, *args: str, model_dir: Path | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS_")}
    env["HF_HOME"] = str(work / "hf_home")  # auxiliary models must come from the model folder only
    env["XDG_CACHE_HOME"] = str(work / "xdg_cache")
    env["OMP_NUM_THREADS"] = "1"  # as this process (single_thread): same numerics, no OpenMP stalls
    cmd = [*prefix, sys.executable, str(REPO / "main.py"), "synth", "--model-dir", str(model_dir or tiny_model_dir()),
           "--cache-dir", str(work / "voice_cache"), *FAST, *args]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def read_wav(path: Path) -> np.ndarray:
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 22050, 1), info
    audio, sr = sf.read(str(path), dtype="int16")
    assert sr == 22050 and audio.ndim == 1 and audio.size > 0 and np.abs(audio.astype(np.int32)).max() > 0
    return audio


def no_leftovers(folder: Path, expected: set[str]) -> None:
    names = {p.name for p in folder.iterdir()}
    assert names == expected, f"unexpected files in {folder}: {sorted(names - expected)}"


# ------------------------------------------------------------------------------------------ successful runs


def test_synth_writes_wav_equal_to_engine(work: Path, engine: Engine) -> None:
    out_dir = work / "plain"
    out_dir.mkdir()
    out = out_dir / "out.wav"
    run = synth(work, "--text", TEXT, "--voice", "voice.wav", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "Traceback" not in run.stderr
    audio = read_wav(out)
    expected = engine.synthesize(SynthesisRequest(TEXT, work / "voice.wav", settings=SETTINGS)).audio
    np.testing.assert_array_equal(audio, expected)
    no_leftovers(out_dir, {"out.wav"})
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask, "the WAV gets ordinary permissions"

    # existing output: refused, file untouched (--overwrite is exercised by the batch test)
    before = out.read_bytes()
    refused = synth(work, "--text", "Something else.", "--voice", "voice.wav", "--out", str(out), "--quiet")
    assert refused.returncode != 0
    expected_error = f"error: {out} already exists; choose another name or pass --overwrite."
    assert refused.stderr.strip().splitlines() == [expected_error]
    assert out.read_bytes() == before
    no_leftovers(out_dir, {"out.wav"})


def test_emotion_vector_and_emotion_clip(work: Path, engine: Engine) -> None:
    vec = work / "vector.wav"
    run = synth(work, "--text", TEXT, "--voice", "voice.wav", "--out", str(vec), "--quiet",
                "--emo-vector", ",".join(map(str, VECTOR)), "--emo-alpha", "0.8")
    assert run.returncode == 0, run.stderr
    vector = Emotion("vector", vector=VECTOR, alpha=0.8)
    expected = engine.synthesize(SynthesisRequest(TEXT, work / "voice.wav", vector, SETTINGS)).audio
    np.testing.assert_array_equal(read_wav(vec), expected)
    plain = engine.synthesize(SynthesisRequest(TEXT, work / "voice.wav", settings=SETTINGS)).audio
    assert not np.array_equal(expected, plain), "the emotion vector changes the result"

    clip = work / "emoclip.wav"
    run = synth(work, "--text", TEXT, "--voice", "voice.wav", "--out", str(clip), "--quiet",
                "--emo-audio", "emotion.wav", "--emo-alpha", "0.5")
    assert run.returncode == 0, run.stderr
    emotion = Emotion("audio", audio=work / "emotion.wav", alpha=0.5)
    expected = engine.synthesize(SynthesisRequest(TEXT, work / "voice.wav", emotion, SETTINGS)).audio
    np.testing.assert_array_equal(read_wav(clip), expected)


def test_batch_jsonl(work: Path, engine: Engine) -> None:
    out_dir = work / "batch"
    out_dir.mkdir()
    jobs = [
        {"text": "First job of the batch.", "out": str(out_dir / "a.wav")},
        {"text": TEXT, "voice": str(work / "emotion.wav"), "out": str(out_dir / "b.wav"),
         "emotion": {"mode": "vector", "vector": list(VECTOR), "alpha": 0.6}},
    ]
    batch = work / "jobs.jsonl"
    batch.write_text(json.dumps(jobs[0]) + "\n\n" + json.dumps(jobs[1]) + "\n", encoding="utf-8")
    (out_dir / "b.wav").write_bytes(b"an older result")
    run = synth(work, "--batch", str(batch), "--voice", "voice.wav", "--quiet")
    assert run.returncode != 0 and "b.wav already exists" in run.stderr  # checked before anything runs
    no_leftovers(out_dir, {"b.wav"})
    run = synth(work, "--batch", str(batch), "--voice", "voice.wav", "--quiet", "--overwrite")
    assert run.returncode == 0, run.stderr
    a = engine.synthesize(SynthesisRequest(jobs[0]["text"], work / "voice.wav", settings=SETTINGS)).audio
    vector = Emotion("vector", vector=VECTOR, alpha=0.6)
    b = engine.synthesize(SynthesisRequest(TEXT, work / "emotion.wav", vector, SETTINGS)).audio
    np.testing.assert_array_equal(read_wav(out_dir / "a.wav"), a)
    np.testing.assert_array_equal(read_wav(out_dir / "b.wav"), b)
    no_leftovers(out_dir, {"a.wav", "b.wav"})

    # a bad line anywhere stops the batch before anything is synthesised
    bad = work / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok", "out": str(out_dir / "c.wav")}) + "\n{not json\n", encoding="utf-8")
    run = synth(work, "--batch", str(bad), "--voice", "voice.wav", "--quiet")
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "line 2" in lines[0]
    no_leftovers(out_dir, {"a.wav", "b.wav"})


# ------------------------------------------------------------------------------------------------ bad input

BAD_INPUTS = {
    "missing clip": (["--voice", "missing.wav"], "Voice clip not found: missing.wav"),
    "corrupt clip": (["--voice", "corrupt.wav"], "The voice clip cannot be used: Cannot read corrupt.wav as audio"),
    "missing emotion clip": (["--voice", "voice.wav", "--emo-audio", "gone.wav"], "Emotion clip not found: gone.wav"),
    "empty text": (["--voice", "voice.wav", "--text", "   "], "The text is empty"),
    "vector too short": (["--voice", "voice.wav", "--emo-vector", "0.1,0.2,0.3"], "exactly 8 values"),
    "vector negative": (["--voice", "voice.wav", "--emo-vector", "0,0,-0.5,0,0,0,0,0.2"], "'sad' is negative"),
    "vector NaN": (["--voice", "voice.wav", "--emo-vector", "nan,0,0,0,0,0,0,0.2"], "'happy' is not a number"),
    "vector all zero": (["--voice", "voice.wav", "--emo-vector", "0,0,0,0,0,0,0,0"], "all zeros"),
    "vector not numbers": (["--voice", "voice.wav", "--emo-vector", "sad,calm"], "--emo-vector needs 8 numbers"),
    "alpha out of range": (["--voice", "voice.wav", "--emo-vector", "0,0,1,0,0,0,0,0", "--emo-alpha", "1.5"],
                           "between 0 and 1"),
    "no output folder": (["--voice", "voice.wav", "--out", "nowhere/out.wav"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_one_line_error_no_file(work: Path, case: str) -> None:
    args, message = BAD_INPUTS[case]
    out_dir = work / ("bad-" + case.replace(" ", "-"))
    out_dir.mkdir()
    run = synth(work, "--text", "Hello there.", "--out", str(out_dir / "out.wav"), "--quiet", *args)  # last --out wins
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    no_leftovers(out_dir, set())


def _gpt_limits() -> tuple[int, int]:
    gpt = load_config(tiny_model_dir() / "config.yaml").require("gpt")
    return gpt.max_mel_tokens, gpt.max_text_tokens


SETTING_CASES = {  # option, value, what the one error line must say about the allowed range
    "max mel tokens": ("--max-mel-tokens", "5000", lambda: f"from 1 to {_gpt_limits()[0]} (the loaded model's limit)"),
    "max text tokens": ("--max-text-tokens", "100000",
                        lambda: f"from 1 to {_gpt_limits()[1]} (the loaded model's limit)"),
    "diffusion steps": ("--diffusion-steps", "0", lambda: "a whole number from 1 to 1000"),
    "top p": ("--top-p", "2", lambda: "greater than 0 and at most 1"),
}


@pytest.mark.parametrize("case", list(SETTING_CASES), ids=list(SETTING_CASES))
def test_setting_out_of_range_one_line_no_file(work: Path, tmp_path: Path, case: str) -> None:
    option, value, allowed = SETTING_CASES[case]
    assert _gpt_limits()[0] < 5000 and _gpt_limits()[1] < 100000  # the values are beyond this model's limits
    run = synth(work, "--text", "Hello there.", "--voice", "voice.wav", "--out", str(tmp_path / "out.wav"),
                option, value)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr  # no traceback, no progress: the check runs before the models load
    assert lines[0].startswith(f"error: {option} {float(value):g}") or lines[0].startswith(f"error: {option} {value}")
    assert "is out of range" in lines[0] and allowed() in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_internal_error_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Anything that is not an EngineError is a bug: one line naming the log file, which holds the traceback."""
    import core.cli

    def buggy(args: object) -> int:
        raise KeyError("a bug deep inside")

    monkeypatch.setenv("INDEXTTS_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(core.cli, "_synth", buggy)
    assert core.cli.run(["synth", "--text", "Hello.", "--voice", "v.wav", "--out", "o.wav"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    log_file = tmp_path / "logs" / "cli.log"
    assert len(lines) == 1 and lines[0].startswith("internal error: KeyError") and str(log_file) in lines[0], lines
    logged = log_file.read_text(encoding="utf-8")
    assert "Traceback" in logged and "a bug deep inside" in logged and "in buggy" in logged


def test_missing_model_file(work: Path, tmp_path: Path) -> None:
    models = mirror_model_dir(tmp_path / "checkpoints", without="s2mel.pth")
    run = synth(work, "--text", "Hello.", "--voice", "voice.wav", "--out", str(tmp_path / "out.wav"), "--quiet",
                model_dir=models)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "s2mel.pth" in lines[0] and "missing" in lines[0] and "models download" in lines[0]
    assert not (tmp_path / "out.wav").exists()


def test_unwritable_output_folder(work: Path, tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    # root ignores directory permissions: run the CLI without the capabilities that let it do so
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    if prefix:
        assert shutil.which("setpriv"), "running as root: setpriv (util-linux) is needed to drop DAC override"
    try:
        run = synth(work, "--text", "Hello.", "--voice", "voice.wav", "--out", str(folder / "out.wav"), "--quiet",
                    prefix=prefix)
        assert run.returncode != 0
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith(f"error: Cannot write to the output folder {folder}"), lines[0]
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
