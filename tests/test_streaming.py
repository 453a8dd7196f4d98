"""Streaming inside a segment (core/streaming.py): the chunker's sample bookkeeping, the crossfaded joins,
cancellation mid-stream, every emotion mode, and ``main.py synth --stream``.

The chunker is checked on its own with renderers whose output is known sample by sample, then through the real
:class:`core.engine.Engine` loaded from the tiny upstream-layout model folder (:func:`tiny_model_dir`), with a
small chunk plan so that a short segment has several joins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_engine import samples_for_codes, stop_token_logit
from tiny_models import single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import (
    SAMPLE_RATE,
    AudioChunk,
    Cancelled,
    Emotion,
    GenerationSettings,
    SettingError,
    SynthesisRequest,
)
from core.cli import _settings as cli_settings
from core.cli import build_parser
from core.engine import Engine
from core.gpt.generate import generate
from core.streaming import (
    STREAM_BEAMS_WARNING,
    LatentRows,
    SegmentStreamer,
    StreamPlan,
    crossfade,
    frames_for_codes,
    hann_in,
)

REPO = Path(__file__).resolve().parent.parent
HOP = 256
TEXT = "The first sentence is here. Then a second one follows, a little longer. And a third closes it."
PLAN = StreamPlan(first_codes=6, growth=2.0, max_codes=12, overlap_codes=2)
STREAM = dict(do_sample=True, num_beams=1, max_mel_tokens=40, diffusion_steps=2, seed=3, stream=True)


def settings(**over: object) -> GenerationSettings:
    return GenerationSettings(**{**STREAM, **over})  # type: ignore[arg-type]


def joins(plan: StreamPlan, n: int) -> list[tuple[int, int]]:
    """Sample ranges of a segment where two chunks are crossfaded."""
    w = plan.windows(n)
    return [(HOP * frames_for_codes(a), HOP * frames_for_codes(prev_b)) for (_, prev_b), (a, _) in zip(w, w[1:])]


# ------------------------------------------------------------------------------------- the chunker on its own


def run_streamer(plan: StreamPlan, n: int, signal) -> tuple[np.ndarray, list[tuple[int, int]], list[bool]]:
    """Stream ``n`` codes through a renderer that returns ``signal(global sample indices)``."""
    calls: list[tuple[int, int]] = []
    out: list[np.ndarray] = []
    lasts: list[bool] = []

    def render(codes: list[int], a: int, b: int) -> np.ndarray:
        assert len(codes) >= b
        calls.append((a, b))
        idx = np.arange(HOP * frames_for_codes(a), HOP * frames_for_codes(b))
        return signal(idx, len(calls) - 1).astype(np.float32)

    def emit(samples: np.ndarray, last: bool) -> None:
        out.append(samples)
        lasts.append(last)

    s = SegmentStreamer(plan, render, emit, HOP)
    for code in range(n):
        s.push(code)
    s.finish()
    return np.concatenate(out) if out else np.zeros(0, np.float32), calls, lasts


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 10, 11, 12, 13, 26, 27, 40, 101])
def test_chunk_bookkeeping_is_exact(n: int) -> None:
    """Every sample of hop * F(n) is produced once, at its global place: a renderer giving the same value for a
    sample in every chunk comes out unchanged (the fade weights sum to one), for every way a segment can end."""
    signal = lambda idx, k: np.sin(idx * 0.013) + 0.25 * np.cos(idx * 0.0007)  # noqa: E731
    audio, calls, lasts = run_streamer(PLAN, n, signal)
    assert audio.size == HOP * frames_for_codes(n)
    np.testing.assert_allclose(audio, signal(np.arange(audio.size), 0), atol=2e-6)
    assert calls == PLAN.windows(n)
    assert lasts[-1] and not any(lasts[:-1])
    lengths = [b - a for a, b in calls]
    if n >= 27:  # 6, 12, 12, ...: growing, then capped; each chunk starts overlap codes before the last ended
        assert lengths[:3] == [6, 12, 12]
        assert all(a == prev_b - 2 for (_, prev_b), (a, _) in zip(calls, calls[1:]))


def test_join_is_a_hann_crossfade() -> None:
    w = hann_in(512)
    assert w[0] > 0 and w[-1] < 1 and np.all(np.diff(w) > 0)
    np.testing.assert_allclose(w + w[::-1], 1.0, atol=1e-6)  # fade-out = mirrored fade-in, sums to one
    old, new = np.ones(512, np.float32), np.zeros(512, np.float32)
    np.testing.assert_allclose(crossfade(old, new), 1.0 - w, atol=1e-7)


def max_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x.astype(np.float64))).max())


def join_and_rest_steps(audio: np.ndarray, regions: list[tuple[int, int]]) -> tuple[float, float]:
    """Largest sample-to-sample step inside the joins (one sample either side) and everywhere else."""
    d = np.abs(np.diff(audio.astype(np.float64)))
    at_join = np.zeros(d.size, dtype=bool)
    for lo, hi in regions:
        at_join[max(lo - 1, 0):hi + 1] = True
    return float(d[at_join].max()), float(d[~at_join].max())


def test_crossfade_removes_the_step_a_hard_cut_makes() -> None:
    """Chunks that disagree (each a tone with its own phase): a hard cut jumps, the crossfade does not."""
    tone = lambda idx, k: 0.5 * np.sin(2 * np.pi * 200 * idx / SAMPLE_RATE + 1.9 * k)  # noqa: E731
    n = 40
    hard, _, _ = run_streamer(StreamPlan(first_codes=6, max_codes=12, overlap_codes=0), n, tone)
    cuts = [(HOP * frames_for_codes(a), HOP * frames_for_codes(a) + 1)
            for a, _ in StreamPlan(first_codes=6, max_codes=12, overlap_codes=0).windows(n)[1:]]
    at_cut, rest = join_and_rest_steps(hard, cuts)
    assert at_cut > 3 * rest  # the check below can fail
    soft, _, _ = run_streamer(PLAN, n, tone)
    regions = joins(PLAN, n)
    at_join, rest = join_and_rest_steps(soft, regions)
    # a fade over L samples adds at most (pi / 2L) * |old - new| <= (pi / 2L) * 1.0 to a step: a fraction of a
    # percent of this tone's own step, where the hard cut jumps many times it
    shortest = min(hi - lo for lo, hi in regions)
    assert at_join <= rest + np.pi / (2 * shortest) * 1.0 < 1.1 * rest


# ------------------------------------------------------------------------------------------- engine fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streaming")
    write_clip(root / "voice.wav", 1.2, 180.0, seed=1)
    write_clip(root / "emotion.wav", 1.0, 260.0, seed=4)
    return root


@pytest.fixture(scope="module")
def engine(work: Path) -> Engine:
    e = Engine(cache_dir=work / "cache")
    e.load(tiny_model_dir(), device="cpu")
    e.stream_plan = PLAN
    return e


def test_latent_rows_grow_as_the_full_latent_pass(engine: Engine) -> None:
    """The incremental latent pass gives, chunk after chunk, the rows of the non-streamed second GPT pass (text ids
    0 and 1 kept there, as upstream)."""
    gpt = engine.pipeline.gpt
    gen = torch.Generator().manual_seed(2)
    spk, emo = torch.randn(1, 32, gpt.cfg.model_dim, generator=gen), torch.randn(1, gpt.cfg.model_dim, generator=gen)
    ids = [5, 0, 7, 9, 1, 11]
    codes = torch.randint(0, 8000, (57,), generator=gen).tolist()
    full = gpt.latent(ids, spk, emo, torch.tensor(codes))
    rows = LatentRows(gpt, ids, spk, emo)
    for b in (1, 6, 16, 17, 40, 57):
        np.testing.assert_allclose(rows.upto(codes, b).numpy(), full[:, :b].numpy(), atol=1e-5)
    assert rows.fed == 56


def codes_of(engine: Engine, request: SynthesisRequest) -> list[list[int]]:
    _, _, traces, _ = engine.synthesize_traced(request)
    return [t.codes.tolist() for t in traces]


# ------------------------------------------------------------------------------------------- engine tests


def test_streamed_segments_have_the_non_streamed_length_and_codes(engine: Engine, work: Path) -> None:
    """Same seed, one beam: the same codes in every segment (the decode's random stream is untouched by the
    chunks), each segment exactly as long as the non-streamed render, the chunks joined are the result."""
    s = settings(max_text_tokens_per_segment=12)
    voice = work / "voice.wav"
    with stop_token_logit(engine, -1e4):  # exactly max_mel_tokens codes per segment, several chunks each
        chunks: list[AudioChunk] = []
        streamed = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s), on_chunk=chunks.append)
        plain = engine.synthesize(SynthesisRequest(TEXT, voice, settings=s.__class__(**{**s.to_dict(),
                                                                                         "stream": False})))
    n_seg = len(streamed.segments)
    assert n_seg >= 2 and streamed.segments == plain.segments
    assert streamed.audio.size == plain.audio.size
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), streamed.audio)
    assert [c.offset for c in chunks] == list(np.cumsum([0] + [c.audio.size for c in chunks[:-1]]))
    gap = SAMPLE_RATE * s.interval_silence_ms // 1000
    for seg in range(n_seg):
        mine = [c for c in chunks if c.segment == seg]
        assert [c.index for c in mine] == list(range(len(mine))) and len(mine) == len(PLAN.windows(40))
        assert [c.last for c in mine] == [False] * (len(mine) - 1) + [True]
        assert sum(c.audio.size for c in mine) == samples_for_codes(40) + (gap if seg else 0)
    assert streamed.timings["first_audio"] < streamed.timings["first_segment"]
    assert not any("beam" in w for w in streamed.warnings)  # num_beams was already 1

    # with natural stops (sampling ends the segments at different lengths): still the same codes and lengths
    a = codes_of(engine, SynthesisRequest(TEXT, voice, settings=s))
    b = codes_of(engine, SynthesisRequest(TEXT, voice, settings=GenerationSettings(**{**s.to_dict(), "stream": False})))
    assert a == b and any(len(c) != 40 for c in a)


def test_stream_forces_one_beam_with_a_warning(engine: Engine, work: Path) -> None:
    s = settings(num_beams=3, max_mel_tokens=10)
    result = engine.synthesize(SynthesisRequest("Hello there.", work / "voice.wav", settings=s))
    assert STREAM_BEAMS_WARNING.format(beams=3) in result.warnings
    with pytest.raises(ValueError, match="num_beams == 1"):
        p = engine.pipeline
        generate(p.gpt, [5, 6], torch.zeros(1, 32, p.gpt.cfg.model_dim), torch.zeros(1, p.gpt.cfg.model_dim),
                 GenerationSettings(num_beams=2, max_mel_tokens=4), callback=lambda code: None)


def test_stream_setting_is_validated() -> None:
    with pytest.raises(SettingError, match="stream"):
        GenerationSettings(stream="yes").validate()  # type: ignore[arg-type]


def test_no_join_steps_more_than_the_signal_itself(engine: Engine, work: Path) -> None:
    with stop_token_logit(engine, -1e4):
        result = engine.synthesize(SynthesisRequest("Hello there.", work / "voice.wav", settings=settings()))
    audio = result.audio.astype(np.float64)
    regions = joins(PLAN, 40)
    assert len(regions) == 4 and audio.size == samples_for_codes(40)
    at_join, rest = join_and_rest_steps(audio, regions)
    assert 0 < at_join <= rest, (at_join, rest)


def test_cancel_mid_stream_stops_within_one_chunk(engine: Engine, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel while the second chunk is in its diffusion: that chunk's next step does not run, it never reaches
    the caller, the decode stops and the engine is free for the next job."""
    cancel = threading.Event()
    cfm = engine.pipeline.s2mel.cfm
    velocity = cfm.estimator.velocity
    calls = {"chunks": 0, "steps": 0, "steps_after_cancel": 0}
    real_inference = cfm.inference

    def counting_inference(*args, **kwargs):
        calls["chunks"] += 1
        return real_inference(*args, **kwargs)

    def counting_velocity(*args, **kwargs):
        calls["steps"] += 1
        if cancel.is_set():
            calls["steps_after_cancel"] += 1
        if calls["chunks"] == 2:
            cancel.set()
        return velocity(*args, **kwargs)

    monkeypatch.setattr(cfm, "inference", counting_inference)
    monkeypatch.setattr(cfm.estimator, "velocity", counting_velocity)
    step = engine.pipeline.gpt.gpt.step
    decode_steps = {"after": 0}

    def counting_step(*args, **kwargs):
        if cancel.is_set():
            decode_steps["after"] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(engine.pipeline.gpt.gpt, "step", counting_step)
    chunks: list[AudioChunk] = []
    with stop_token_logit(engine, -1e4), pytest.raises(Cancelled):
        engine.synthesize(SynthesisRequest("Hello there.", work / "voice.wav", settings=settings(diffusion_steps=4)),
                          on_chunk=chunks.append, cancel=cancel)
    assert len(chunks) == 1 and calls["chunks"] == 2
    assert calls["steps"] == 4 + 1 and calls["steps_after_cancel"] == 0 and decode_steps["after"] == 0
    monkeypatch.undo()
    ok = engine.synthesize(SynthesisRequest("Hello there.", work / "voice.wav", settings=settings(max_mel_tokens=8)))
    assert ok.audio.size > 0


class _StubQwen:
    """Stands for the QwenEmotion model (not part of the tiny layout): a fixed reading of the text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def vector(self, text: str) -> list[float]:
        self.texts.append(text)
        return [0.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0, 0.3]


EMOTIONS = {
    "speaker": lambda work: Emotion(),
    "audio": lambda work: Emotion("audio", audio=work / "emotion.wav", alpha=0.6),
    "vector": lambda work: Emotion("vector", vector=(0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2)),
    "vector-random": lambda work: Emotion("vector", vector=(0.3, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0), random=True),
    "text": lambda work: Emotion("text", text="quietly sad"),
}


@pytest.mark.parametrize("mode", list(EMOTIONS))
def test_streaming_works_with_every_emotion_mode(engine: Engine, work: Path, mode: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    qwen = _StubQwen()
    monkeypatch.setattr(engine.pipeline, "qwen", qwen)
    emotion = EMOTIONS[mode](work)
    voice = work / "voice.wav"
    s = settings(max_mel_tokens=20)
    with stop_token_logit(engine, -1e4):
        chunks: list[AudioChunk] = []
        streamed = engine.synthesize(SynthesisRequest("Hello there.", voice, emotion, s), on_chunk=chunks.append)
        plain = engine.synthesize(SynthesisRequest("Hello there.", voice, emotion,
                                                   GenerationSettings(**{**s.to_dict(), "stream": False})))
        codes = [codes_of(engine, SynthesisRequest("Hello there.", voice, emotion, x)) for x in
                 (s, GenerationSettings(**{**s.to_dict(), "stream": False}))]
    assert len(chunks) == len(PLAN.windows(20)) == 3
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), streamed.audio)
    assert streamed.audio.size == plain.audio.size == samples_for_codes(20)
    assert np.abs(streamed.audio.astype(np.int32)).max() > 0
    assert codes[0] == codes[1]  # the emotion reached the decode the same way
    assert (qwen.texts == ["quietly sad"] * 4) if mode == "text" else not qwen.texts


def test_on_chunk_without_streaming_gets_each_segment_once(engine: Engine, work: Path) -> None:
    s = settings(stream=False, max_text_tokens_per_segment=12, max_mel_tokens=6)
    chunks: list[AudioChunk] = []
    result = engine.synthesize(SynthesisRequest(TEXT, work / "voice.wav", settings=s), on_chunk=chunks.append)
    assert [(c.segment, c.index, c.last) for c in chunks] == [(i, 0, True) for i in range(len(result.segments))]
    np.testing.assert_array_equal(np.concatenate([c.audio for c in chunks]), result.audio)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_stream_writes_the_streamed_chunks(engine: Engine, work: Path) -> None:
    """``synth --stream`` (default chunk plan) writes exactly what the engine streams for the same settings, and
    leaves no temporary file."""
    out_dir = work / "cli"
    out_dir.mkdir()
    args = ["--device", "cpu", "--seed", "5", "--max-mel-tokens", "70", "--diffusion-steps", "2", "--stream"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS_")}
    env.update(HF_HOME=str(work / "hf_home"), XDG_CACHE_HOME=str(work / "xdg"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "main.py"), "synth", "--model-dir", str(tiny_model_dir()), "--cache-dir",
           str(work / "cache"), "--text", "Hello there.", "--voice", str(work / "voice.wav"),
           "--out", str(out_dir / "out.wav"), *args]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: " + STREAM_BEAMS_WARNING.format(beams=3) in done.stderr
    assert "first audio after" in done.stdout
    assert [p.name for p in out_dir.iterdir()] == ["out.wav"]
    info = sf.info(str(out_dir / "out.wav"))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", SAMPLE_RATE, 1)
    written, _ = sf.read(str(out_dir / "out.wav"), dtype="int16")

    request = SynthesisRequest("Hello there.", work / "voice.wav",
                               settings=cli_settings(build_parser().parse_args(["synth", *args])))
    assert request.settings.stream
    chunks: list[AudioChunk] = []
    plan, engine.stream_plan = engine.stream_plan, StreamPlan()  # the CLI's engine has the default plan
    try:
        result = engine.synthesize(request, on_chunk=chunks.append)
    finally:
        engine.stream_plan = plan
    np.testing.assert_array_equal(result.audio, np.concatenate([c.audio for c in chunks]))
    assert len(chunks) >= 2  # the model stopped after the first chunk: a join is in the file
    np.testing.assert_array_equal(written, np.concatenate([c.audio for c in chunks]))


def test_cli_stream_failure_leaves_no_file(work: Path) -> None:
    """A synthesis that fails after chunks were written: no file under --out, no temporary file."""
    from core.cli import _synth_streamed

    out_dir = work / "cli_fail"
    out_dir.mkdir()

    class Failing:
        def synthesize(self, request, *, on_progress=None, cancel=None, on_chunk=None):
            on_chunk(AudioChunk(0, 1, 0, np.ones(4096, np.int16), 0, False))
            raise Cancelled()

    with pytest.raises(Cancelled):
        _synth_streamed(Failing(), SynthesisRequest("x", work / "voice.wav"), out_dir / "out.wav", False,
                        lambda p: None, threading.Event())  # type: ignore[arg-type]
    assert list(out_dir.iterdir()) == []
