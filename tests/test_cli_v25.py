"""``python main.py synth --model 2.5 --lang --duration`` as a user runs it (subprocesses on tiny models).

The model folder holds IndexTTS-2 with IndexTTS-2.5 in its ``IndexTTS-2.5`` subfolder (2.5's own files only: the
helper models come from the 2.0 folder), as ``models download --model 2.5`` installs them side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import read_wav, synth
from tiny_models import _place, single_thread, tiny_model_dir, tiny_v25_model_dir, write_clip  # noqa: F401

from core.api import GenerationSettings, SynthesisRequest
from core.engine import Engine
from core.models import V25_SUBDIR, V25_VOCAB, installed_versions, version_dir
from core.text.v25 import default_segment_tokens

TEXTS = {"zh": "你好，世界。", "en": "Hello there.", "ja": "こんにちは。", "es": "¡Hola, amigos!", "ar": "مرحبا بكم."}
SETTINGS = dict(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)


def _side_by_side(root: Path, *, without: str = "") -> Path:
    """The tiny 2.0 folder with the tiny 2.5 files (not its helper models) in the IndexTTS-2.5 subfolder."""
    parts = ((tiny_model_dir(), root, "\0"), (tiny_v25_model_dir(), root / V25_SUBDIR, "hf_cache/"))
    for src_root, dst_root, skip in parts:
        for path in src_root.rglob("*"):
            rel = path.relative_to(src_root).as_posix()
            if path.is_file() and not rel.startswith(skip) and rel != without:
                _place(path, dst_root / rel)
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli25")
    write_clip(root / "voice.wav", 1.2, 170.0, seed=3)
    _side_by_side(root / "models")
    return root


def test_both_versions_side_by_side(work: Path) -> None:
    base = work / "models"
    assert installed_versions(base) == ["2.0", "2.5"]
    assert version_dir(base, "2.5") == base / V25_SUBDIR and version_dir(base / V25_SUBDIR, "2.5") == base / V25_SUBDIR
    assert not (base / V25_SUBDIR / "hf_cache").exists()  # the helper models are the 2.0 folder's


def test_each_language_writes_a_wav(work: Path) -> None:
    base = work / "models"
    batch = work / "jobs.jsonl"
    lines = [{"text": text, "out": f"{lang}.wav", "settings": {"lang": lang}} for lang, text in TEXTS.items()]
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    run = synth(work, "--model", "2.5", "--batch", str(batch), "--voice", "voice.wav", "--quiet", model_dir=base)
    assert run.returncode == 0, run.stderr
    single = synth(work, "--model", "2.5", "--text", TEXTS["es"], "--lang", "es", "--duration", "2.0",
                   "--voice", "voice.wav", "--out", "es_slow.wav", "--quiet", model_dir=base)
    assert single.returncode == 0, single.stderr

    engine = Engine()
    engine.load(base / V25_SUBDIR, device="cpu")
    for lang, text in TEXTS.items():
        s = GenerationSettings(**SETTINGS, lang=lang, max_text_tokens_per_segment=default_segment_tokens(lang))
        expected = engine.synthesize(SynthesisRequest(text, work / "voice.wav", settings=s)).audio
        np.testing.assert_array_equal(read_wav(work / f"{lang}.wav"), expected, err_msg=lang)
    slow = read_wav(work / "es_slow.wav")
    assert slow.size > read_wav(work / "es.wav").size
    s = GenerationSettings(**SETTINGS, lang="es", duration_factor=2.0, max_text_tokens_per_segment=60)
    np.testing.assert_array_equal(slow, engine.synthesize(SynthesisRequest(TEXTS["es"], work / "voice.wav",
                                                                           settings=s)).audio)


@pytest.mark.parametrize(("args", "line"), [
    (["--lang", "fr"], "error: --lang 'fr' is out of range: allowed one of zh, en, ja, es, ar or none (from the "
                       "text's script)."),
    (["--duration", "2.5"], "error: --duration 2.5 is out of range: allowed a number from 0.5 to 2."),
    (["--duration", "0.4"], "error: --duration 0.4 is out of range: allowed a number from 0.5 to 2."),
])
def test_bad_setting_is_one_line(work: Path, args: list[str], line: str) -> None:
    run = synth(work, "--model", "2.5", "--text", "Hello.", "--voice", "voice.wav", "--out", "bad.wav", *args,
                model_dir=work / "models")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [line]
    assert not (work / "bad.wav").exists()


def test_duration_with_2_0_and_missing_vocabulary(work: Path, tmp_path: Path) -> None:
    run = synth(work, "--model", "2.0", "--text", "Hello.", "--voice", "voice.wav", "--out", "bad.wav",
                "--duration", "1.5", model_dir=work / "models")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["error: --duration 1.5 is out of range: allowed 1.0 with IndexTTS-2.0 "
                                               "(duration control needs IndexTTS-2.5)."]
    broken = _side_by_side(tmp_path / "models", without=V25_VOCAB)
    run = synth(work, "--model", "2.5", "--text", "Hello.", "--voice", "voice.wav", "--out", "bad.wav",
                model_dir=broken)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The IndexTTS-2.5 model folder ")
    assert f"has no {V25_VOCAB} (text vocabulary" in lines[0] and "models download --model 2.5" in lines[0]
    none = synth(work, "--model", "2.5", "--text", "Hello.", "--voice", "voice.wav", "--out", "bad.wav",
                 model_dir=tiny_model_dir())
    assert none.returncode == 2 and len(none.stderr.strip().splitlines()) == 1
    assert "IndexTTS-2.5 is not installed in" in none.stderr
    assert not (work / "bad.wav").exists()


def test_models_check_model_2_5(work: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from test_cli import REPO

    def check(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "main.py"), "models", "check", "--model", "2.5", "--dir",
                               str(folder)], capture_output=True, text=True, timeout=120,
                              env={"HF_HUB_CACHE": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"})

    ok = check(work / "models")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == f"Model folder: {work / 'models' / V25_SUBDIR}"
    assert lines[-1] == "All required model files are present."
    assert any("codec.pth" in line for line in lines) and any("campplus_cn_common.bin" in line for line in lines)
    broken = _side_by_side(tmp_path / "models", without="codec.pth")
    bad = check(broken)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[-1] == ("1 required file(s) missing or damaged: run 'python main.py models download "
                                           "--model 2.5'.")
