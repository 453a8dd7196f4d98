"""The engine around the pipeline: streaming, cancellation, progress, the voice disk cache, emotion vectors,
the max-mel-tokens warning and the segment preview.

Every test runs the real :class:`core.engine.Engine` loaded with ``Engine.load`` from a model folder in the
upstream layout (:func:`tiny_model_dir`): the reference set's tiny checkpoints (the e2e config, GPT, s2mel,
semantic codec, CAMPPlus, BigVGAN, emotion matrices, the real BPE model) plus a random-weight w2v-BERT that
has just the layers IndexTTS2 reads and the width the GPT and codec take. ``tests/test_cli.py`` uses the same
folder for the command line.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.api import SAMPLE_RATE, Cancelled, Emotion, EngineError, GenerationSettings, Progress
from core.config import load_config
from core.engine import FRAMES_PER_CODE, Engine
from reference import ref

# ------------------------------------------------------------------------------------ tiny model folder

W2V_HEADS = 8
W2V_FFN = 16  # intermediate size: the feed-forward width does not matter for wiring, keep the file small


def _place(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` without copying data where the OS allows (hard link, then symlink, then copy)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for how in (os.link, os.symlink):
        try:
            how(src, dst)
            return
        except OSError:
            continue
    shutil.copyfile(src, dst)


def write_tiny_model_dir(root: Path) -> Path:
    """A complete model folder in the upstream layout (``core.models`` manifest) with tiny random-weight models."""
    from safetensors.torch import save_file

    from core.w2vbert import SEMANTIC_LAYER, W2VBert, W2VBertConfig

    cases = json.loads(ref("e2e", "cases.json").read_text(encoding="utf-8"))

    def ckpt(name: str) -> Path:
        return (ref("e2e") / cases["checkpoints"][name]["path"]).resolve()

    files = {
        "config.yaml": ref("e2e", "config.yaml"),
        "bpe.model": ref("data", "bpe.model"),
        "gpt.pth": ckpt("gpt.pth"),
        "s2mel.pth": ckpt("s2mel.pth"),
        "feat1.pt": ref("e2e", "feat1.pt"),
        "feat2.pt": ref("e2e", "feat2.pt"),
        "hf_cache/semantic_codec_model.safetensors": ckpt("semantic_codec"),
        "hf_cache/campplus_cn_common.bin": ckpt("campplus"),
        "hf_cache/bigvgan/bigvgan_generator.pt": ckpt("bigvgan_generator.pt"),
        "hf_cache/bigvgan/config.json": ckpt("bigvgan_config.json"),
    }
    for local, src in files.items():
        _place(src, root / local)

    # w2v-BERT: the semantic width the codec (and the GPT conditioning) take; only the layers IndexTTS2 reads.
    hidden = load_config(root / "config.yaml").require("semantic_codec").hidden_size
    hf = {
        "model_type": "wav2vec2-bert", "hidden_size": hidden, "num_hidden_layers": SEMANTIC_LAYER,
        "num_attention_heads": W2V_HEADS, "intermediate_size": W2V_FFN, "feature_projection_input_dim": 160,
        "left_max_position_embeddings": 64, "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 3,
        "layer_norm_eps": 1e-5, "mask_time_prob": 0.0, "position_embeddings_type": "relative_key",
        "hidden_act": "swish", "add_adapter": False,
    }
    torch.manual_seed(0)
    model = W2VBert(W2VBertConfig.from_hf(hf))
    w2v = root / "hf_cache" / "w2v-bert-2.0"
    w2v.mkdir(parents=True)
    (w2v / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    # float16 on disk halves the file; the loader converts to float32
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(w2v / "model.safetensors"))
    torch.save({"mean": torch.zeros(hidden), "var": torch.ones(hidden)}, root / "wav2vec2bert_stats.pt")
    return root


@functools.lru_cache(maxsize=None)
def tiny_model_dir() -> Path:
    """Built once per test session (shared by test_engine and test_cli)."""
    base = Path(tempfile.mkdtemp(prefix="indextts-tiny-models-"))
    atexit.register(shutil.rmtree, base, True)
    return write_tiny_model_dir(base / "checkpoints")


def mirror_model_dir(dst: Path, *, without: str) -> Path:
    """A copy of the tiny model folder (links) lacking the file ``without`` (a manifest path)."""
    src = tiny_model_dir()
    for path in src.rglob("*"):
        rel = path.relative_to(src).as_posix()
        if path.is_file() and rel != without:
            _place(path.resolve(), dst / rel)
    return dst


def write_clip(path: Path, seconds: float = 2.0, freq: float = 180.0, seed: int = 0, sr: int = 24000) -> Path:
    """A voiced-sounding test clip (amplitude-modulated tone + a little noise)."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave = tone + 0.02 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
    return path


TEXT = "The first sentence is here. Then a second one follows, a little longer. And a third closes it."
FAST = dict(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)


def settings(**over: object) -> GenerationSettings:
    return GenerationSettings(**{**FAST, **over})


@contextmanager
def stop_token_logit(engine: Engine, bias: float) -> Iterator[None]:
    """Temporarily push the GPT's stop-token logit (-1e4: never stop, +1e4: stop at once)."""
    head = engine.gpt.mel_head
    stop = engine.gpt.cfg.stop_mel_token
    old = head.bias[stop].item()
    with torch.no_grad():
        head.bias[stop] = bias
    try:
        yield
    finally:
        with torch.no_grad():
            head.bias[stop] = old


def samples_for_codes(n: int) -> int:
    frames = int((torch.tensor([n]) * FRAMES_PER_CODE).long())  # float32 product, as the engine and upstream
    return frames * load_config(tiny_model_dir() / "config.yaml").s2mel.preprocess_params.spect_params.hop_length


def in_thread(fn, timeout: float = 120.0):  # noqa: ANN001, ANN201 - a deadlock must fail the test, not hang it
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"the engine did not finish within {timeout} s (lock left held?)"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread while these tests run (the CLI subprocesses get OMP_NUM_THREADS=1 too): on a small,
    shared machine OpenMP's barrier waits make the many tiny ops here several times slower with 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="module")
def voice(work: Path) -> Path:
    return write_clip(work / "voice.wav", 1.2, 180.0, seed=1)


@pytest.fixture(scope="module")
def engine(work: Path) -> Engine:
    e = Engine(cache_dir=work / "cache")
    e.load(tiny_model_dir(), device="cpu")
    return e


# ------------------------------------------------------------------------------------------------- tests


def test_stream_yields_each_segment_and_joins_to_synthesize(engine: Engine, voice: Path) -> None:
    s = settings(max_text_tokens_per_segment=12, max_mel_tokens=6, interval_silence_ms=150)
    preview = engine.split_text(TEXT, s.max_text_tokens_per_segment)
    assert len(preview) >= 2, preview
    with stop_token_logit(engine, -1e4):  # exactly max_mel_tokens codes per segment
        result = engine.synthesize(TEXT, voice, settings=s)
        streamed = list(engine.synthesize_stream(TEXT, voice, settings=s))
    n = len(preview)
    assert [seg.index for seg in streamed] == list(range(n))
    assert all(seg.count == n for seg in streamed)
    assert [seg.text for seg in streamed] == result.segments == preview
    for seg in streamed:
        assert seg.audio.dtype == np.int16 and seg.audio.ndim == 1
        assert seg.audio.size == samples_for_codes(s.max_mel_tokens)
        assert np.abs(seg.audio.astype(np.int32)).max() > 0
    silence = np.zeros(SAMPLE_RATE * s.interval_silence_ms // 1000, dtype=np.int16)
    joined = [part for seg in streamed for part in (seg.audio, silence)][:-1]
    assert result.sample_rate == SAMPLE_RATE
    np.testing.assert_array_equal(result.audio, np.concatenate(joined))
    for key in ("voice", "emotion", "gpt", "s2mel", "vocoder", "first_segment", "total"):
        assert result.timings[key] >= 0.0, key


def test_progress_is_monotonic_and_ends_at_one(engine: Engine, voice: Path) -> None:
    reports: list[Progress] = []
    s = settings(max_text_tokens_per_segment=12, diffusion_steps=3)
    result = engine.synthesize(TEXT, voice, settings=s, on_progress=reports.append)
    fractions = [p.fraction for p in reports]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[-1] == 1.0 and reports[-1].stage == "Done"
    assert fractions.count(1.0) == 1, "1.0 is reported only when everything is done"
    n = len(result.segments)
    seen = [p.segment for p in reports if p.segments]
    assert all(p.segments == n for p in reports if p.segments)
    assert seen == sorted(seen) and set(seen) == set(range(1, n + 1))
    stages = {p.stage for p in reports}
    assert {"Preparing voice", "Generating speech codes", "Rendering spectrogram", "Vocoding"} <= stages


def test_cancel_from_progress_during_diffusion(engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cancel = threading.Event()
    steps = {"total": 0, "after_cancel": 0}
    velocity = engine.s2mel.cfm.estimator.velocity

    def counting_velocity(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps["total"] += 1
        steps["after_cancel"] += cancel.is_set()
        return velocity(*args, **kwargs)

    monkeypatch.setattr(engine.s2mel.cfm.estimator, "velocity", counting_velocity)
    after: list[Progress] = []

    def on_progress(p: Progress) -> None:
        if cancel.is_set():
            after.append(p)
        if p.stage == "Rendering spectrogram" and p.fraction > 0.05 + 0.95 * 0.5:  # after a diffusion step
            cancel.set()

    with pytest.raises(Cancelled):
        engine.synthesize(TEXT, voice, settings=settings(diffusion_steps=200), on_progress=on_progress, cancel=cancel)
    assert cancel.is_set()
    assert steps["after_cancel"] == 0, "a diffusion step ran after the cancel request"
    assert steps["total"] <= 2 and not after
    monkeypatch.undo()

    # the engine works again afterwards (the lock was released)
    again = in_thread(lambda: engine.synthesize(TEXT, voice, settings=settings()))
    assert again.audio.size > 0 and not any("cancel" in w.lower() for w in again.warnings)


def test_cancel_within_one_decode_step(engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cancel = threading.Event()
    calls = {"steps": 0, "after_cancel": 0}
    step = engine.gpt.gpt.step

    def counting_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["steps"] += 1
        calls["after_cancel"] += cancel.is_set()
        if calls["steps"] == 3:
            cancel.set()
        return step(*args, **kwargs)

    monkeypatch.setattr(engine.gpt.gpt, "step", counting_step)
    with stop_token_logit(engine, -1e4), pytest.raises(Cancelled):
        engine.synthesize(TEXT, voice, settings=settings(max_mel_tokens=60), cancel=cancel)
    assert calls["steps"] == 3 and calls["after_cancel"] == 0
    monkeypatch.undo()

    # an abandoned stream releases the engine too
    stream = engine.synthesize_stream(TEXT, voice, settings=settings(max_text_tokens_per_segment=12))
    first = next(stream)
    assert first.index == 0
    stream.close()
    reference = in_thread(lambda: engine.synthesize(TEXT, voice, settings=settings()))
    repeat = engine.synthesize(TEXT, voice, settings=settings())
    np.testing.assert_array_equal(reference.audio, repeat.audio)


def test_voice_disk_cache_is_reused(engine: Engine, voice: Path, work: Path) -> None:
    s = settings(max_text_tokens_per_segment=40)
    first = engine.synthesize(TEXT, voice, settings=s)
    cache = work / "cache"
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.safetensors")) == ["emo", "voice"]

    def fresh() -> tuple[Engine, dict[str, int]]:
        e = Engine(cache_dir=cache)
        reports: list[Progress] = []
        e.load(tiny_model_dir(), device="cpu", on_progress=reports.append)
        fractions = [p.fraction for p in reports]
        assert e.loaded and fractions[0] == 0.0 and fractions[-1] == 1.0
        assert all(b > a for a, b in zip(fractions, fractions[1:])), f"load progress not monotonic: {fractions}"
        calls = {"n": 0}
        embed = e.semantic.embed

        def counting_embed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls["n"] += 1
            return embed(*args, **kwargs)

        e.semantic.embed = counting_embed
        return e, calls

    second, calls = fresh()
    renamed = Path(shutil.copyfile(voice, work / "same voice, other name.wav"))  # keyed by content, not name
    for clip in (voice, renamed):
        result = second.synthesize(TEXT, clip, settings=s)
        np.testing.assert_array_equal(result.audio, first.audio)
    assert calls["n"] == 0, "w2v-BERT ran although the voice was cached on disk"

    other = write_clip(work / "other.wav", 1.0, 140.0, seed=7)
    second.synthesize(TEXT, other, settings=s)
    assert calls["n"] == 2, "a new clip needs the speaker and the emotion features"

    # an unreadable cache entry is recomputed, with the same result
    for path in cache.glob("voice-*.safetensors"):
        path.write_bytes(b"not a safetensors file")
    third, calls3 = fresh()
    np.testing.assert_array_equal(third.synthesize(TEXT, voice, settings=s).audio, first.audio)
    assert calls3["n"] == 1  # the speaker features again; the emotion entry is still valid


@pytest.mark.parametrize(
    ("vector", "words"),
    [
        ((0.5,) * 7, "exactly 8 values"),
        ((0.5,) * 9, "exactly 8 values"),
        ((0.2, 0.0, -0.1, 0.0, 0.0, 0.0, 0.0, 0.0), "'sad' is negative"),
        ((0.2, math.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), "'angry' is not a number"),
        ((0.2, 0.0, 0.0, 0.0, 0.0, 0.0, math.inf, 0.0), "'surprised' is not a number"),
        ((0.0,) * 8, "all zeros"),
        (None, "needs 8 values"),
    ],
)
def test_bad_emotion_vector(engine: Engine, voice: Path, vector: tuple[float, ...] | None, words: str) -> None:
    emotion = Emotion("vector", vector=vector, alpha=0.8)
    with pytest.raises(EngineError) as err:
        engine.synthesize("Hello.", voice, emotion, settings())
    message = str(err.value)
    assert words in message and "\n" not in message
    with pytest.raises(EngineError, match=words.replace("'", ".")):
        next(iter(engine.synthesize_stream("Hello.", voice, emotion, settings())))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_bad_emotion_alpha(engine: Engine, voice: Path, alpha: float) -> None:
    with pytest.raises(EngineError, match="between 0 and 1"):
        engine.synthesize("Hello.", voice, Emotion("vector", vector=(0.5,) + (0.0,) * 7, alpha=alpha), settings())


def test_engine_applies_no_bias_gui_does(engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.gpt import emotion as core_emotion
    from desktop.emotion_ui import normalize_emo_vec

    seen: list[list[float]] = []
    mix = engine.emotions.mix

    def recording_mix(weights, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(list(weights))
        return mix(weights, *args, **kwargs)

    monkeypatch.setattr(engine.emotions, "mix", recording_mix)
    sliders = (0.3, 0.0, 0.55, 0.1, 0.0, 0.25, 0.4, 0.7)
    for alpha in (1.0, 0.7, 0.33):
        engine.synthesize("Hello.", voice, Emotion("vector", vector=sliders, alpha=alpha), settings())
        expected = [int(v * alpha * 10000) / 10000 for v in sliders] if alpha != 1.0 else list(sliders)
        assert seen[-1] == expected, f"alpha {alpha}: the engine must only scale by alpha (4-decimal truncation)"

    gui = normalize_emo_vec(sliders)
    assert gui == pytest.approx(core_emotion.normalize_emo_vec(sliders), abs=1e-12)
    assert sum(gui) == pytest.approx(0.8)  # the WebUI caps the biased sum at 0.8
    biased = [v * b for v, b in zip(sliders, core_emotion.EMO_BIAS)]
    assert gui == pytest.approx([v * 0.8 / sum(biased) for v in biased])
    assert gui != pytest.approx(list(sliders))
    engine.synthesize("Hello.", voice, Emotion("vector", vector=tuple(gui), alpha=1.0), settings())
    assert seen[-1] == gui, "the GUI's normalised vector reaches the matrices unchanged"
    small = (0.1,) + (0.0,) * 7  # under the cap: bias only
    assert normalize_emo_vec(small)[0] == pytest.approx(0.1 * core_emotion.EMO_BIAS[0])
    assert normalize_emo_vec(small, apply_bias=False) == pytest.approx(list(small))


def test_max_mel_tokens_warning(engine: Engine, voice: Path) -> None:
    s = settings(max_text_tokens_per_segment=12, max_mel_tokens=4)
    n = len(engine.split_text(TEXT, 12))
    with stop_token_logit(engine, -1e4):
        result = engine.synthesize(TEXT, voice, settings=s)
    limit = [w for w in result.warnings if "limit of 4 speech tokens" in w]
    assert [w.split()[1] for w in limit] == [str(i + 1) for i in range(n)], result.warnings
    assert result.audio.size > 0

    with stop_token_logit(engine, 1e4):  # stops at once: no speech, and no limit warning
        silent = list(engine.synthesize_stream(TEXT, voice, settings=s))
        assert silent == []  # no segment had audio to stream
        with pytest.raises(EngineError, match="produced no speech"):  # nothing to write: a clear error
            engine.synthesize(TEXT, voice, settings=s)

    with stop_token_logit(engine, -1e4):
        _, _, traces, _ = engine.synthesize_traced("Hello there.", voice, settings=settings(max_mel_tokens=5))
    assert all(t.hit_max_tokens and t.codes.numel() == 5 for t in traces)


def test_split_text_preview_matches_synthesis(engine: Engine, voice: Path) -> None:
    assert engine.split_text("") == [] and engine.split_text("   \n ") == []
    one = engine.split_text(TEXT, 120)
    assert len(one) == 1
    short = engine.split_text(TEXT, 12)
    assert len(short) > len(one)
    squash = "".join(one).replace(" ", "")
    assert "".join(short).replace(" ", "") == squash, "segments cover the text in order, nothing lost"
    tokens = [len(engine.frontend.tokenize(seg)) for seg in short]
    assert max(tokens) <= 12 + 2, tokens  # a segment may only exceed by its closing punctuation
    result = engine.synthesize(TEXT, voice, settings=settings(max_text_tokens_per_segment=12, max_mel_tokens=3))
    assert result.segments == short


def test_clear_errors(engine: Engine, voice: Path, work: Path) -> None:
    with pytest.raises(EngineError, match="text is empty"):
        engine.synthesize("  ", voice, settings=settings())
    with pytest.raises(EngineError, match="Voice clip not found"):
        engine.synthesize("Hello.", work / "missing.wav", settings=settings())
    with pytest.raises(EngineError, match="Emotion clip not found"):
        engine.synthesize("Hello.", voice, Emotion("audio", audio=work / "missing.wav"), settings())
    corrupt = work / "corrupt.wav"
    corrupt.write_text("this is text, not audio\n", encoding="utf-8")
    for emotion, role in ((None, "voice"), (Emotion("audio", audio=corrupt, alpha=0.5), "emotion")):
        with pytest.raises(EngineError) as err:
            engine.synthesize("Hello.", corrupt if role == "voice" else voice, emotion, settings())
        assert f"The {role} clip cannot be used" in str(err.value) and "corrupt.wav" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(EngineError, match="not loaded"):
        Engine().synthesize("Hello.", voice)
