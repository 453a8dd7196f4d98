"""The engine drives IndexTTS-2.5: one Engine, one ``synthesize`` call, the version told by the model folder's files.

``Engine.synthesize_traced`` on the tiny 2.5 folder reproduces upstream ``infer_v2_5`` (the e2e goldens of
<reference>/v2_5/e2e, every case: languages, emotion modes, duration factors, several segments) through the same
request type as 2.0; ``limits`` says which version is loaded; settings a 2.0 model cannot honour are clear errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ref
from safetensors.torch import load_file
from tiny_models import single_thread, tiny_model_dir, tiny_v25_model_dir, write_clip  # noqa: F401 - fixture

from core.api import Emotion, EngineError, GenerationSettings, SettingError, SynthesisRequest
from core.engine import STREAM_V25_WARNING, Engine
from core.s2mel.v25 import target_length
from core.text.v25 import SUPPORTED_LANGUAGES

CASES = json.loads(ref("v2_5", "e2e", "cases.json").read_text(encoding="utf-8"))
FAST = dict(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)
TEXTS = {"zh": "你好，世界。", "en": "Hello there.", "ja": "こんにちは。", "es": "¡Hola, amigos!", "ar": "مرحبا بكم."}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    e = Engine(cache_dir=tmp_path_factory.mktemp("v25cache"))
    e.load(tiny_v25_model_dir(), device="cpu")
    return e


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("v25voice") / "voice.wav", 1.2, 180.0, seed=1)


def _request(case: dict) -> SynthesisRequest:
    inputs = case["inputs"]
    if inputs["emo_vector"] is not None:
        emotion = Emotion("vector", vector=tuple(inputs["emo_vector"]), alpha=inputs["emo_alpha"])
    elif inputs["emo_audio"] is not None:
        emotion = Emotion("audio", audio=ref("data", "examples", inputs["emo_audio"]), alpha=inputs["emo_alpha"])
    else:
        emotion = Emotion()
    gap_ms = round(case["output"]["silence_samples_between_segments"] * 1000 / 22050)
    settings = GenerationSettings(
        do_sample=False, num_beams=1, repetition_penalty=10.0, max_mel_tokens=inputs["max_mel_tokens"],
        max_text_tokens_per_segment=inputs["max_text_tokens_per_segment"], interval_silence_ms=gap_ms,
        lang=inputs["lang"].lower(), duration_factor=inputs["duration_factor"])
    return SynthesisRequest(inputs["text"], ref("data", "examples", inputs["spk"]), emotion, settings)


def test_limits_say_the_version(engine: Engine) -> None:
    limits = engine.limits
    assert limits is not None and limits.version == "2.5" and limits.label == "IndexTTS-2.5"
    assert limits.languages == SUPPORTED_LANGUAGES and limits.duration_control and not limits.streaming
    two = Engine()
    two.load(tiny_model_dir(), device="cpu")
    assert two.limits is not None and two.limits.version == "2.0"
    assert two.limits.languages == () and not two.limits.duration_control and two.limits.streaming


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_engine_reproduces_upstream(engine: Engine, case: dict) -> None:
    g = load_file(str(ref("v2_5", "e2e", case["file"])))
    noises: list[tuple[int, int]] = []

    def noise(i: int, frames: int) -> torch.Tensor:
        noises.append((i, frames))
        return g[f"seg{i}.cfm_noise"]

    result, voice, traces, _ = engine.synthesize_traced(
        _request(case), spk_cond_emb=g["spk_cond_emb_x8"].float() / 8, emo_cond_emb=g["emo_cond_emb_x8"].float() / 8,
        noise=noise)
    details = case["segments_detail"]
    assert result.segments == case["text_front"]["segments"]
    assert [t.text_ids for t in traces] == [d["text_ids"] for d in details]
    for i, t in enumerate(traces):
        assert t.codes.tolist() == g[f"seg{i}.codes"][0].tolist()
        assert t.latent is None  # no second GPT pass in 2.5
        assert noises[i] == (i, g[f"seg{i}.cfm_noise"].shape[-1])
        assert t.mel is not None and t.mel.shape[-1] == details[i]["target_length"]
    torch.testing.assert_close(voice.prompt_condition, g["prompt_condition"], atol=1e-4, rtol=0)
    expected = g["wav_int16"].to(torch.int32).numpy()
    assert result.audio.shape == expected.shape
    assert int(np.abs(result.audio.astype(np.int32) - expected).max()) <= 32


def test_each_language_and_duration(engine: Engine, voice: Path) -> None:
    for lang, text in TEXTS.items():
        lengths = {}
        for df in (0.5, 2.0):
            s = GenerationSettings(**FAST, lang=lang, duration_factor=df)
            result, _, traces, _ = engine.synthesize_traced(SynthesisRequest(text, voice, settings=s))
            assert len(traces) == 1 and traces[0].mel is not None
            assert traces[0].mel.shape[-1] == target_length(2 * traces[0].codes.numel(), df), (lang, df)
            lengths[df] = result.audio.size
        assert lengths[2.0] > lengths[0.5] > 0, lang


def test_language_from_script_and_voice_cache(engine: Engine, voice: Path) -> None:
    # None: the language from the text's script (kana -> ja) gives the same as naming it
    auto = engine.synthesize(SynthesisRequest(TEXTS["ja"], voice, settings=GenerationSettings(**FAST)))
    named = engine.synthesize(SynthesisRequest(TEXTS["ja"], voice, settings=GenerationSettings(**FAST, lang="ja")))
    np.testing.assert_array_equal(auto.audio, named.audio)
    other = engine.synthesize(SynthesisRequest(TEXTS["ja"], voice, settings=GenerationSettings(**FAST, lang="en")))
    assert not np.array_equal(other.audio, named.audio)
    p = engine.pipeline
    assert p.voices is not None and p.voices.folder is not None
    cached = [f.name for f in p.voices.folder.iterdir()]
    assert any(name.startswith(f"voice25-{p.fingerprint}-") for name in cached), cached
    assert engine.split_text("Hello there. How are you today, my friend?", 8, "en") == \
        [s.text for s in p.frontend.segments("Hello there. How are you today, my friend?", "en", 8)]


def test_stream_with_v25_is_one_chunk_per_segment_and_says_so(engine: Engine, voice: Path) -> None:
    chunks = []
    s = GenerationSettings(**FAST, lang="en", stream=True, max_text_tokens_per_segment=8)
    result = engine.synthesize(SynthesisRequest("Hello there. How are you today?", voice, settings=s),
                               on_chunk=chunks.append)
    assert STREAM_V25_WARNING in result.warnings
    assert len(chunks) == len(result.segments) >= 2
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), result.audio)


def test_settings_checked_against_the_version(engine: Engine, voice: Path) -> None:
    with pytest.raises(SettingError, match="duration_factor = 2.5: allowed a number from 0.5 to 2"):
        engine.synthesize(SynthesisRequest("Hello.", voice, settings=GenerationSettings(**FAST, duration_factor=2.5)))
    with pytest.raises(SettingError, match="lang = 'fr': allowed one of zh, en, ja, es, ar"):
        engine.synthesize(SynthesisRequest("Hello.", voice, settings=GenerationSettings(**FAST, lang="fr")))
    two = Engine()
    two.load(tiny_model_dir(), device="cpu")
    with pytest.raises(SettingError, match=r"duration_factor = 1.5: allowed 1.0 with IndexTTS-2.0 \(duration"):
        two.synthesize(SynthesisRequest("Hello.", voice, settings=GenerationSettings(**FAST, duration_factor=1.5)))
    # a 2.0 model ignores the language: the same audio as without it
    plain = two.synthesize(SynthesisRequest("Hello.", voice, settings=GenerationSettings(**FAST)))
    tagged = two.synthesize(SynthesisRequest("Hello.", voice, settings=GenerationSettings(**FAST, lang="ja")))
    np.testing.assert_array_equal(plain.audio, tagged.audio)


def test_missing_vocabulary_is_one_clear_error(tmp_path: Path) -> None:
    src = tiny_v25_model_dir()
    dst = tmp_path / "v25"
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_file() and rel.name != "multilingual_zh_ja_yue_char_del.tiktoken":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).hardlink_to(path)
    with pytest.raises(EngineError) as info:
        Engine().load(dst, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "has no multilingual_zh_ja_yue_char_del.tiktoken" in msg
    assert "models download --model 2.5" in msg


def test_ignored_marks_as_upstream_drops_them(engine: Engine) -> None:
    """The ``!`` / ``"`` ids the GPT drops (the golden's count less the stop id it also drops)."""
    meta = json.loads(ref("v2_5", "gpt", "meta.json").read_text(encoding="utf-8"))
    for text in meta["texts"]:
        lang = text["lang"].lower()
        assert engine.ignored_marks(text["text"], 120, lang) == text["n_dropped_0_1"] - 1, text["text"]
    two = Engine()
    two.load(tiny_model_dir(), device="cpu")
    assert two.ignored_marks(meta["texts"][0]["text"]) == 0
