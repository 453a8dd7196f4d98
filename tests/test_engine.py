"""The engine around the pipeline: streaming, cancellation, progress, the voice disk cache, emotion vectors,
the max-mel-tokens warning and the segment preview.

Every test runs the real :class:`core.engine.Engine` loaded with ``Engine.load`` from a model folder in the
upstream layout (:func:`tiny_model_dir`): the reference set's tiny checkpoints (the e2e config, GPT, s2mel,
semantic codec, CAMPPlus, BigVGAN, emotion matrices, the real BPE model) plus a random-weight w2v-BERT that
has just the layers IndexTTS2 reads and the width the GPT and codec take. ``tests/test_cli.py`` uses the same
folder for the command line.
"""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import mirror_model_dir, single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import (
    SAMPLE_RATE,
    Cancelled,
    Emotion,
    EngineError,
    GenerationSettings,
    Progress,
    SegmentAudio,
    SettingError,
    SynthesisRequest,
)
from core.config import load_config
from core.engine import FRAMES_PER_CODE, Engine

TEXT = "The first sentence is here. Then a second one follows, a little longer. And a third closes it."
FAST = dict(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0)


def settings(**over: object) -> GenerationSettings:
    return GenerationSettings(**{**FAST, **over})


@contextmanager
def stop_token_logit(engine: Engine, bias: float) -> Iterator[None]:
    """Temporarily push the GPT's stop-token logit (-1e4: never stop, +1e4: stop at once)."""
    head = engine.pipeline.gpt.mel_head
    stop = engine.pipeline.gpt.cfg.stop_mel_token
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


def in_thread(fn, timeout: float = 120.0):
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
        streamed: list[SegmentAudio] = []
        result = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s), on_segment=streamed.append)
        plain = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s))
    np.testing.assert_array_equal(result.audio, plain.audio)  # same request and seed: the callback changes nothing
    assert result.warnings == plain.warnings and result.segments == plain.segments
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
    result = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s), on_progress=reports.append)
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
    velocity = engine.pipeline.s2mel.cfm.estimator.velocity

    def counting_velocity(*args, **kwargs):
        steps["total"] += 1
        steps["after_cancel"] += cancel.is_set()
        return velocity(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline.s2mel.cfm.estimator, "velocity", counting_velocity)
    after: list[Progress] = []

    def on_progress(p: Progress) -> None:
        if cancel.is_set():
            after.append(p)
        if p.stage == "Rendering spectrogram" and p.fraction > 0.05 + 0.95 * 0.5:  # after a diffusion step
            cancel.set()

    with pytest.raises(Cancelled):
        request = SynthesisRequest(TEXT, voice, settings=settings(diffusion_steps=200))
        engine.synthesize(request, on_progress=on_progress, cancel=cancel)
    assert cancel.is_set()
    assert steps["after_cancel"] == 0, "a diffusion step ran after the cancel request"
    assert steps["total"] <= 2 and not after
    monkeypatch.undo()

    # the engine works again afterwards (the lock was released)
    again = in_thread(lambda: engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings())))
    assert again.audio.size > 0 and not any("cancel" in w.lower() for w in again.warnings)


def test_cancel_within_one_decode_step(engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cancel = threading.Event()
    calls = {"steps": 0, "after_cancel": 0}
    step = engine.pipeline.gpt.gpt.step

    def counting_step(*args, **kwargs):
        calls["steps"] += 1
        calls["after_cancel"] += cancel.is_set()
        if calls["steps"] == 3:
            cancel.set()
        return step(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline.gpt.gpt, "step", counting_step)
    with stop_token_logit(engine, -1e4), pytest.raises(Cancelled):
        engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings(max_mel_tokens=60)), cancel=cancel)
    assert calls["steps"] == 3 and calls["after_cancel"] == 0
    monkeypatch.undo()

    # a segment callback that raises (a closed player, say) ends the job and releases the engine too
    def broken(seg: SegmentAudio) -> None:
        raise RuntimeError(f"player gone at segment {seg.index}")

    with pytest.raises(RuntimeError, match="segment 0"):
        engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings(max_text_tokens_per_segment=12)),
                          on_segment=broken)
    reference = in_thread(lambda: engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings())))
    repeat = engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings()))
    np.testing.assert_array_equal(reference.audio, repeat.audio)


def test_voice_disk_cache_is_reused(engine: Engine, voice: Path, work: Path) -> None:
    s = settings(max_text_tokens_per_segment=40)
    first = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s))
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
        embed = e.pipeline.semantic.embed

        def counting_embed(*args, **kwargs):
            calls["n"] += 1
            return embed(*args, **kwargs)

        e.pipeline.semantic.embed = counting_embed
        return e, calls

    second, calls = fresh()
    renamed = Path(shutil.copyfile(voice, work / "same voice, other name.wav"))  # keyed by content, not name
    for clip in (voice, renamed):
        result = second.synthesize(SynthesisRequest(TEXT, clip, settings=s))
        np.testing.assert_array_equal(result.audio, first.audio)
    assert calls["n"] == 0, "w2v-BERT ran although the voice was cached on disk"

    other = write_clip(work / "other.wav", 1.0, 140.0, seed=7)
    second.synthesize(SynthesisRequest(TEXT, other, settings=s))
    assert calls["n"] == 2, "a new clip needs the speaker and the emotion features"

    # an unreadable cache entry is recomputed, with the same result
    for path in cache.glob("voice-*.safetensors"):
        path.write_bytes(b"not a safetensors file")
    third, calls3 = fresh()
    np.testing.assert_array_equal(third.synthesize(SynthesisRequest(TEXT, voice, settings=s)).audio, first.audio)
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
        engine.synthesize(SynthesisRequest("Hello.", voice, emotion, settings()))
    message = str(err.value)
    assert words in message and "\n" not in message
    with pytest.raises(EngineError, match=words.replace("'", ".")):  # before anything reaches the callback
        engine.synthesize(SynthesisRequest("Hello.", voice, emotion, settings()), on_segment=pytest.fail)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan])
def test_bad_emotion_alpha(engine: Engine, voice: Path, alpha: float) -> None:
    with pytest.raises(EngineError, match="between 0 and 1"):
        emotion = Emotion("vector", vector=(0.5,) + (0.0,) * 7, alpha=alpha)
        engine.synthesize(SynthesisRequest("Hello.", voice, emotion, settings()))


def test_engine_applies_no_bias_gui_does(engine: Engine, voice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.api import normalize_emo_vec
    from core.gpt import emotion as core_emotion

    seen: list[list[float]] = []
    mix = engine.pipeline.emotions.mix

    def recording_mix(weights, *args, **kwargs):
        seen.append(list(weights))
        return mix(weights, *args, **kwargs)

    monkeypatch.setattr(engine.pipeline.emotions, "mix", recording_mix)
    sliders = (0.3, 0.0, 0.55, 0.1, 0.0, 0.25, 0.4, 0.7)
    for alpha in (1.0, 0.7, 0.33):
        engine.synthesize(SynthesisRequest("Hello.", voice, Emotion("vector", vector=sliders, alpha=alpha), settings()))
        expected = [int(v * alpha * 10000) / 10000 for v in sliders] if alpha != 1.0 else list(sliders)
        assert seen[-1] == expected, f"alpha {alpha}: the engine must only scale by alpha (4-decimal truncation)"

    gui = normalize_emo_vec(sliders)
    assert core_emotion.normalize_emo_vec is normalize_emo_vec  # one copy, used by the GUI and the engine
    assert sum(gui) == pytest.approx(0.8)  # the WebUI caps the biased sum at 0.8
    biased = [v * b for v, b in zip(sliders, core_emotion.EMO_BIAS)]
    assert gui == pytest.approx([v * 0.8 / sum(biased) for v in biased])
    assert gui != pytest.approx(list(sliders))
    engine.synthesize(SynthesisRequest("Hello.", voice, Emotion("vector", vector=tuple(gui), alpha=1.0), settings()))
    assert seen[-1] == gui, "the GUI's normalised vector reaches the matrices unchanged"
    small = (0.1,) + (0.0,) * 7  # under the cap: bias only
    assert normalize_emo_vec(small)[0] == pytest.approx(0.1 * core_emotion.EMO_BIAS[0])
    assert normalize_emo_vec(small, apply_bias=False) == pytest.approx(list(small))


def test_max_mel_tokens_warning(engine: Engine, voice: Path) -> None:
    s = settings(max_text_tokens_per_segment=12, max_mel_tokens=4)
    n = len(engine.split_text(TEXT, 12))
    with stop_token_logit(engine, -1e4):
        result = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s))
    limit = [w for w in result.warnings if "limit of 4 speech tokens" in w]
    assert [w.split()[1] for w in limit] == [str(i + 1) for i in range(n)], result.warnings
    assert result.audio.size > 0

    with stop_token_logit(engine, 1e4):  # stops at once: no speech, and no limit warning
        silent: list[SegmentAudio] = []
        for on_segment in (silent.append, None):  # streaming or not: the same clear error, nothing to write
            with pytest.raises(EngineError, match="produced no speech"):
                engine.synthesize(SynthesisRequest(TEXT, voice, settings=s), on_segment=on_segment)
        assert silent == []  # no segment had audio to stream

    with stop_token_logit(engine, -1e4):
        request = SynthesisRequest("Hello there.", voice, settings=settings(max_mel_tokens=5))
        _, _, traces, _ = engine.synthesize_traced(request)
    assert all(t.hit_max_tokens and t.codes.numel() == 5 for t in traces)


def test_split_text_preview_matches_synthesis(engine: Engine, voice: Path) -> None:
    assert engine.split_text("") == [] and engine.split_text("   \n ") == []
    one = engine.split_text(TEXT, 120)
    assert len(one) == 1
    short = engine.split_text(TEXT, 12)
    assert len(short) > len(one)
    squash = "".join(one).replace(" ", "")
    assert "".join(short).replace(" ", "") == squash, "segments cover the text in order, nothing lost"
    tokens = [len(engine.pipeline.frontend.tokenize(seg)) for seg in short]
    assert max(tokens) <= 12 + 2, tokens  # a segment may only exceed by its closing punctuation
    s = settings(max_text_tokens_per_segment=12, max_mel_tokens=3)
    result = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s))
    assert result.segments == short


def test_clear_errors(engine: Engine, voice: Path, work: Path) -> None:
    with pytest.raises(EngineError, match="text is empty"):
        engine.synthesize(SynthesisRequest("  ", voice, settings=settings()))
    with pytest.raises(EngineError, match="Voice clip not found"):
        engine.synthesize(SynthesisRequest("Hello.", work / "missing.wav", settings=settings()))
    with pytest.raises(EngineError, match="Emotion clip not found"):
        engine.synthesize(SynthesisRequest("Hello.", voice, Emotion("audio", audio=work / "missing.wav"), settings()))
    corrupt = work / "corrupt.wav"
    corrupt.write_text("this is text, not audio\n", encoding="utf-8")
    for emotion, role in ((None, "voice"), (Emotion("audio", audio=corrupt, alpha=0.5), "emotion")):
        with pytest.raises(EngineError) as err:
            engine.synthesize(SynthesisRequest("Hello.", corrupt if role == "voice" else voice, emotion, settings()))
        assert f"The {role} clip cannot be used" in str(err.value) and "corrupt.wav" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(EngineError, match="not loaded"):
        Engine().synthesize(SynthesisRequest("Hello.", voice))


# ------------------------------------------------------------------------------- the engine boundary


def test_settings_beyond_the_model_limits_name_the_setting_and_range(engine: Engine, voice: Path) -> None:
    limits = engine.limits
    assert limits is not None
    cfg = load_config(tiny_model_dir() / "config.yaml").require("gpt")
    assert (limits.max_mel_tokens, limits.max_text_tokens) == (cfg.max_mel_tokens, cfg.max_text_tokens)
    for field, value, high in (("max_mel_tokens", limits.max_mel_tokens + 1, limits.max_mel_tokens),
                               ("max_text_tokens_per_segment", limits.max_text_tokens + 1, limits.max_text_tokens)):
        request = SynthesisRequest("Hello.", voice, settings=settings(**{field: value}))
        request.validate()  # the fixed ranges alone allow it; only the loaded model knows its limit
        with pytest.raises(SettingError) as err:
            engine.synthesize(request, on_segment=pytest.fail)
        assert err.value.setting == field and err.value.value == value
        assert f"from 1 to {high}" in str(err.value) and "\n" not in str(err.value)
    for field, value, words in (("diffusion_steps", 0, "from 1 to"), ("top_p", 2.0, "at most 1"),
                                ("temperature", math.nan, "greater than 0"), ("num_beams", 1.5, "whole number")):
        with pytest.raises(SettingError, match=words) as err:
            SynthesisRequest("Hello.", voice, settings=settings(**{field: value})).validate()
        assert err.value.setting == field


def test_text_the_front_end_cannot_read_is_an_engine_error(engine: Engine, voice: Path) -> None:
    bad = "Hello \ud800 there."  # an unpaired UTF-16 surrogate: not valid Unicode
    request = SynthesisRequest(bad, voice, settings=settings())
    for call in (lambda: engine.split_text(bad), lambda: engine.synthesize(request)):
        with pytest.raises(EngineError, match="cannot be read") as err:
            call()
        assert "\n" not in str(err.value)


def _broken_gpt_folder(dst: Path) -> Path:
    """The tiny folder with a gpt.pth that passes the file check but has none of the GPT's keys: the load gets
    past the text front end, w2v-BERT, codec and CAMPPlus and fails at the GPT."""
    folder = mirror_model_dir(dst, without="gpt.pth")
    torch.save({"not_a_gpt_key": torch.zeros(3)}, folder / "gpt.pth")
    return folder


def test_failed_reload_keeps_the_previous_models_and_good_reload_replaces_all(work: Path, voice: Path) -> None:
    e = Engine(cache_dir=None)
    e.load(tiny_model_dir(), device="cpu")
    old = e.pipeline
    sentinel = object()
    old.qwen = sentinel  # type: ignore[assignment] - stands for a lazily loaded QwenEmotion model
    s = settings(max_text_tokens_per_segment=40)
    before = e.synthesize(SynthesisRequest(TEXT, voice, settings=s)).audio
    progress: list[str] = []
    with pytest.raises(EngineError, match="gpt.pth"):
        e.load(_broken_gpt_folder(work / "broken-gpt"), device="cpu", on_progress=lambda p: progress.append(p.stage))
    assert "Loading CAMPPlus" in progress  # it failed half way, after other stages were built
    assert e.pipeline is old and e.loaded and old.qwen is sentinel
    np.testing.assert_array_equal(e.synthesize(SynthesisRequest(TEXT, voice, settings=s)).audio, before)

    e.load(mirror_model_dir(work / "good-again", without="none"), device="cpu")
    new = e.pipeline
    assert new is not old and new.qwen is None  # everything cached on the models went with them
    for stage in ("frontend", "semantic", "codec", "campplus", "gpt", "s2mel", "vocoder", "emotions", "voices"):
        assert getattr(new, stage) is not getattr(old, stage), stage
    np.testing.assert_array_equal(e.synthesize(SynthesisRequest(TEXT, voice, settings=s)).audio, before)


def test_a_failed_first_load_leaves_no_engine(work: Path) -> None:
    e = Engine(cache_dir=None)
    with pytest.raises(EngineError):
        e.load(_broken_gpt_folder(work / "broken-first"), device="cpu")
    assert not e.loaded and e.limits is None
    with pytest.raises(EngineError, match="not loaded"):
        e.split_text("Hello.")


def test_voice_preparation_during_a_synthesis_waits_for_it(engine: Engine, voice: Path, work: Path) -> None:
    other = write_clip(work / "prepare-me.wav", 1.1, 150.0, seed=11)
    rendering, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold(p: Progress) -> None:
        if p.stage == "Rendering spectrogram" and not rendering.is_set():
            rendering.set()
            assert release.wait(60), "the test never released the synthesis"

    def synth() -> None:
        engine.synthesize(SynthesisRequest(TEXT, voice, settings=settings()), on_progress=hold)
        order.append("synthesis done")

    def prepare() -> None:
        engine.prepare_voice(other)
        order.append("voice prepared")

    first = threading.Thread(target=synth, daemon=True)
    first.start()
    assert rendering.wait(60), "the synthesis never reached the diffusion"
    second = threading.Thread(target=prepare, daemon=True)
    second.start()
    second.join(0.5)
    assert second.is_alive() and order == [], "the voice preparation ran while the synthesis held the models"
    release.set()
    first.join(60)
    second.join(60)
    assert order == ["synthesis done", "voice prepared"]


def test_one_device_decision(engine: Engine) -> None:
    from core.device import probe

    choice = probe("auto")
    assert choice.usable and choice.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert engine.device_choice is not None and engine.device_choice.device == str(engine.device) == "cpu"
    assert not engine.device_choice.fp16 and engine.device_choice.precision == "float32"
    with pytest.raises(EngineError, match="Unknown device"):
        probe("tpu")
    if not torch.cuda.is_available():
        refused = probe("cuda")
        assert not refused.usable and "CUDA was requested" in refused.summary
        e = Engine()
        with pytest.raises(EngineError, match="CUDA was requested"):
            e.load(tiny_model_dir(), device="cuda")
        assert not e.loaded
