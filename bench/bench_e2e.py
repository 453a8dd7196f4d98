"""The whole engine on the CPU with the real configuration and random weights: a 3-segment text, end to end.

Every stage has its released size (config.yaml: GPT 24 x 1280, s2mel DiT 13 x 512, semantic codec; w2v-BERT 2.0
1024 wide (the 17 layers IndexTTS2 reads); CAMPPlus; BigVGAN v2 22 kHz, 1536 channels). Weights are random, built
in memory, which does not change the cost. The GPT's stop token is disabled so each segment decodes exactly
``--codes`` mel codes (``max_mel_tokens`` = codes; the engine then warns that the limit was hit, as expected).
Decoding uses upstream's defaults (sampling, 3 beams) unless ``--greedy``. The run goes through
``Engine.synthesize``'s ``on_segment`` callback, so the time to the first segment is what a listener would wait.

Prints the seconds of every stage (summed over segments), the total (with the process CPU time divided by the
thread count, which is the wall time on idle cores), the time to the first segment, the seconds per segment, the
real-time factor and the peak RSS (``resource.getrusage``).

    python bench/bench_e2e.py [--config data/config.yaml] [--codes 50] [--steps 25] [--ref-seconds 10]
                              [--threads 2] [--greedy]
    python bench/bench_e2e.py --codes 10 --steps 5 --ref-seconds 3      # a quick check
    python bench/bench_e2e.py --model 2.5 [...]                          # IndexTTS-2.5 at its released sizes

``--model 2.5`` builds IndexTTS-2.5 the same way (the 2.0 release's config with the 2.5 vocabulary's 60,509 text
rows, CAMPPlus-conditioned GPT, EnhancedCodec at its released configuration, the real tiktoken vocabulary of the
reference set) and decodes ``--codes / 2`` codes per segment: 2.5's codes are 25 Hz, so the audio has the same
length as 2.0's for the same ``--codes``; its stages (codec decode instead of quantize + vq2emb, no GPT latent
pass) are printed under their own names.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_bigvgan import random_model as random_bigvgan
from bench_gpt import random_model as random_gpt
from bench_w2vbert import REAL_CONFIG as W2V_REAL
from common import Work, count_flops, floor_line, machine_rates, weight_bytes

from core.api import Emotion, GenerationSettings, SegmentAudio, SynthesisRequest
from core.campplus import CAMPPlus, CAMPPlusConfig
from core.config import IndexTTSConfig, load_config
from core.engine import Engine
from core.gpt.emotion import EmotionMatrices
from core.pipeline import Pipeline
from core.s2mel import S2Mel
from core.semantic_codec import SemanticCodec
from core.text import TextFrontend
from core.w2vbert import SEMANTIC_LAYER, SemanticEncoder, W2VBert, W2VBertConfig

TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting each of the two hundred steps "
    "aloud while the wind rattled the salt-stained windows, the gulls settled on the black rocks below, and the "
    "last of the daylight drained slowly out of the sky above the harbour. "
    "When the great lamp finally turned, its beam swept across the dark water and reached the small fishing "
    "boats that were still making their slow way home through the rising swell, the cold spray and the "
    "thickening fog that rolled in from the open sea every autumn. "
    "Nobody in the village could remember a single night when the light had failed, and the keeper intended to "
    "make quite sure that nobody ever would, no matter how fierce the storms of the coming winter might become "
    "or how long the nights would grow. He wrote every passing ship into the heavy logbook on the desk, "
    "trimmed the wicks, polished the brass until it shone, and only then allowed himself a cup of tea by the "
    "small window, watching the beam turn and turn again until the first grey light of morning appeared."
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def default_config() -> Path:
    from reference import reference_root

    return reference_root() / "data" / "config.yaml"


def random_w2v() -> SemanticEncoder:
    """Full-width w2v-BERT 2.0 with only the layers IndexTTS2 reads, random weights, no throwaway init."""
    cfg = W2VBertConfig.from_hf(W2V_REAL, source="bench_w2vbert.REAL_CONFIG")
    with torch.device("meta"):
        model = W2VBert(cfg)
    model.keep_layers(SEMANTIC_LAYER)
    model = model.to_empty(device="cpu").eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.zero_()
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.weight is not None:
                m.weight.fill_(1.0)
    hidden = cfg.hidden_size
    return SemanticEncoder(model, torch.randn(hidden, generator=gen) * 0.1, torch.rand(hidden, generator=gen) + 0.5)


def stopwatch(built: dict[str, float]) -> Callable[[str, Callable[[], Any]], Any]:
    """``timed(name, make)``: ``make()``, its seconds recorded in ``built[name]``."""

    def timed(name: str, make: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = make()
        built[name] = time.perf_counter() - t
        return out

    return timed


def random_emotions(cfg: IndexTTSConfig, campplus: CAMPPlus, model_dim: int) -> EmotionMatrices:
    rows = sum(cfg.emo_num)
    return EmotionMatrices.from_tensors(torch.randn(rows, campplus.cfg.embedding_size), torch.randn(rows, model_dim),
                                       cfg.emo_num)


def build_engine(cfg: IndexTTSConfig, bpe: Path) -> tuple[Engine, dict[str, float]]:
    """An Engine whose every stage has the configured (released) size, random weights; seconds per build."""
    built: dict[str, float] = {}
    timed = stopwatch(built)
    torch.manual_seed(0)
    gpt_cfg = cfg.require("gpt")
    campplus = timed("CAMPPlus", lambda: CAMPPlus(CAMPPlusConfig()).eval())
    pipeline = Pipeline(
        cfg,
        frontend=timed("text", lambda: TextFrontend(bpe)),
        semantic=timed("w2v-BERT", random_w2v),
        codec=timed("semantic codec", lambda: SemanticCodec(cfg.require("semantic_codec")).eval()),
        campplus=campplus,
        gpt=timed("GPT", lambda: random_gpt(gpt_cfg)),  # stop token disabled: exactly max_mel_tokens codes
        s2mel=timed("s2mel", lambda: S2Mel(cfg.require("s2mel"), gpt_dim=gpt_cfg.model_dim).eval()),
        vocoder=timed("BigVGAN", random_bigvgan),
        emotions=random_emotions(cfg, campplus, gpt_cfg.model_dim),
    )
    eng = Engine(pipeline=pipeline)
    return eng, built


class StageClock:
    """Wraps engine methods to add up the seconds spent in each stage. ``sync`` (e.g. ``torch.cuda.synchronize``)
    runs before each reading, so an asynchronous device's work is counted in the stage that queued it."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync or (lambda: None)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        inner = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.sync()
                self.seconds[stage] += time.perf_counter() - t
                self.calls[stage] += 1

        setattr(obj, method, timed)


def build_v25_engine(cfg: IndexTTSConfig) -> tuple[Engine, dict[str, float]]:
    """IndexTTS-2.5 at the released sizes (the 2.0 release's config, the 2.5 text rows), random weights."""
    from dataclasses import replace

    from reference import reference_root

    from core.codec_v25 import RELEASED, EnhancedCodec
    from core.pipeline_v25 import V25Pipeline
    from core.s2mel.v25 import S2MelV25
    from core.text.v25 import V25TextFrontend
    from core.text.v25_vocab import VOCAB_FILE

    built: dict[str, float] = {}
    timed = stopwatch(built)
    torch.manual_seed(0)
    gpt_cfg = replace(cfg.require("gpt"), number_text_tokens=V25_TEXT_TOKENS)
    campplus = timed("CAMPPlus", lambda: CAMPPlus(CAMPPlusConfig()).eval())
    vocab = reference_root() / "v2_5" / "data" / VOCAB_FILE
    pipeline = V25Pipeline(
        cfg,
        frontend=timed("text", lambda: V25TextFrontend(vocab, positions=gpt_cfg.max_text_tokens + 2)),
        semantic=timed("w2v-BERT", random_w2v),
        codec=timed("EnhancedCodec", lambda: EnhancedCodec(RELEASED).eval()),
        campplus=campplus,
        gpt=timed("GPT", lambda: random_gpt(gpt_cfg, campplus=True)),
        s2mel=timed("s2mel", lambda: S2MelV25(cfg.require("s2mel")).eval()),
        vocoder=timed("BigVGAN", random_bigvgan),
        emotions=random_emotions(cfg, campplus, gpt_cfg.model_dim),
    )
    return Engine(pipeline=pipeline), built


V25_TEXT_TOKENS = 60509  # IndexTTS-2.5's number_text_tokens (its vocabulary and special tokens)


def instrument(eng: Engine, sync: Callable[[], None] | None = None, clock: Any = None) -> Any:
    """Wrap every stage's method with ``clock`` (default: a new :class:`StageClock` with ``sync``)."""
    import core.gpt.generate as decode

    clock = clock or StageClock(sync)
    p = eng.pipeline
    if p.version == "2.5":
        clock.wrap(p.semantic, "embed", "w2v-BERT (speaker + emotion)")
        clock.wrap(p.campplus, "forward", "CAMPPlus")
        clock.wrap(p.gpt, "campplus_latent", "GPT speaker conditioning")
        clock.wrap(p.gpt, "merge_emovec", "GPT emotion conditioning")
        clock.wrap(decode, "generate", "GPT decode")
        clock.wrap(p.codec, "decode", "EnhancedCodec (decode)")
        clock.wrap(p.s2mel.length_regulator, "forward", "length regulator")
        clock.wrap(p.s2mel.cfm, "inference", "s2mel CFM (diffusion)")
        clock.wrap(p.vocoder, "forward", "BigVGAN")
        return clock
    clock.wrap(p.semantic, "embed", "w2v-BERT (speaker + emotion)")
    clock.wrap(p.codec, "quantize", "semantic codec (quantize)")
    clock.wrap(p.campplus, "forward", "CAMPPlus")
    clock.wrap(p.gpt, "get_conditioning", "GPT speaker conditioning")
    clock.wrap(p.gpt, "merge_emovec", "GPT emotion conditioning")
    clock.wrap(decode, "generate", "GPT decode")
    clock.wrap(p.gpt, "latent", "GPT latent pass")
    clock.wrap(p.codec, "vq2emb", "semantic codec (vq2emb)")
    clock.wrap(p.s2mel.length_regulator, "forward", "length regulator")
    clock.wrap(p.s2mel.cfm, "inference", "s2mel CFM (diffusion)")
    clock.wrap(p.vocoder, "forward", "BigVGAN")
    return clock


class FlopClock:
    """Wraps the same engine methods as :class:`StageClock` to count each stage's FLOPs (outermost wrapped call
    only, so a stage inside another is not counted twice) and its calls."""

    def __init__(self) -> None:
        self.flops: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth = 0

    def wrap(self, obj: Any, method: str, stage: str) -> None:
        inner = getattr(obj, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return inner(*args, **kwargs)
            self._depth += 1
            try:
                out, flops = count_flops(lambda: inner(*args, **kwargs))
            finally:
                self._depth -= 1
            self.flops[stage] += flops
            self.calls[stage] += 1
            return out

        setattr(obj, method, counted)


def stage_weight_passes(eng: Engine, settings: GenerationSettings) -> dict[str, tuple[int, int]]:
    """Per stage: (weight bytes, how often one call reads them): a decode step or a diffusion step reads its
    model's weights once each."""
    p = eng.pipeline
    gpt = p.gpt
    decode = weight_bytes(gpt.gpt) + weight_bytes(gpt.final_norm) + weight_bytes(gpt.mel_head)
    return {
        "w2v-BERT (speaker + emotion)": (weight_bytes(p.semantic), 1),
        "semantic codec (quantize)": (weight_bytes(p.codec), 1),
        "CAMPPlus": (weight_bytes(p.campplus), 1),
        "GPT speaker conditioning": (weight_bytes(getattr(gpt, "conditioning_encoder", torch.nn.Module())), 1),
        "GPT decode": (decode, settings.max_mel_tokens),
        "GPT latent pass": (weight_bytes(gpt.gpt), 1),
        "semantic codec (vq2emb)": (0, 1),  # a codebook lookup: reads only the rows it picks
        "length regulator": (weight_bytes(p.s2mel.length_regulator), 1),
        "s2mel CFM (diffusion)": (weight_bytes(p.s2mel.cfm.estimator), settings.diffusion_steps),
        "BigVGAN": (weight_bytes(p.vocoder), 1),
    }


def print_floors(eng: Engine, clock: StageClock, request: SynthesisRequest) -> None:
    """Synthesize ``request`` again with every stage under the FLOP counter (its voice must not be cached), then
    print each timed stage against its floor."""
    seconds, calls = dict(clock.seconds), dict(clock.calls)  # the timed run's (the clock still runs inside)
    flops = FlopClock()
    instrument(eng, clock=flops)
    eng.synthesize(request)
    passes = stage_weight_passes(eng, request.settings)
    rates = machine_rates()
    print(f"\nfloors (FLOPs counted in a second synthesis of the same text; machine: {rates})")
    total_floor = 0.0
    for stage, sec in seconds.items():
        per_call, reads = passes.get(stage, (0, 1))
        work = Work(flops.flops.get(stage, 0), per_call * reads * calls[stage])
        total_floor += work.floor_seconds(rates)
        if work.floor_seconds(rates) > 1e-3:  # a lookup-only stage has no meaningful floor
            print("  " + floor_line(stage, sec, work, rates))
    timed = sum(seconds.values())
    print(f"  all timed stages: {timed:.2f} s, floor {total_floor:.2f} s, achieved/floor {timed / total_floor:.2f} x")


def write_clip(path: Path, seconds: float, sr: int = 24000, seed: int = 0) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32), sr, subtype="PCM_16")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="IndexTTS-2 config.yaml (default: reference data)")
    parser.add_argument("--codes", type=int, default=50, help="mel codes per segment (exactly)")
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps")
    parser.add_argument("--ref-seconds", type=float, default=10.0, help="length of the reference clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--greedy", action="store_true", help="greedy, 1 beam (default: upstream sampling, 3 beams)")
    parser.add_argument("--max-text-tokens", type=int, default=120, help="text tokens per segment")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--no-floors", action="store_true", help="skip the FLOP-counting second synthesis")
    parser.add_argument("--model", choices=("2.0", "2.5"), default="2.0",
                        help="IndexTTS version (2.5: --codes / 2 codes per segment, the same audio length)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = args.config or default_config()
    cfg = load_config(config)

    t0 = time.perf_counter()
    if args.model == "2.5":
        eng, built = build_v25_engine(cfg)
    else:
        eng, built = build_engine(cfg, config.parent / cfg.bpe_model)
    codes = args.codes // 2 if args.model == "2.5" else args.codes
    params = {
        name: sum(p.numel() for p in getattr(eng.pipeline, attr).parameters()) / 1e6
        for name, attr in (("w2v-BERT", "semantic"), ("codec", "codec"), ("CAMPPlus", "campplus"), ("GPT", "gpt"),
                           ("s2mel", "s2mel"), ("BigVGAN", "vocoder"))
    }
    print(f"IndexTTS-{args.model}; config {config}; torch {torch.__version__}, {args.threads} threads; load average "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"models built in {time.perf_counter() - t0:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in built.items()) + "); M params: "
          + ", ".join(f"{k} {v:.0f}" for k, v in params.items()) + f"; RSS {peak_rss_mib():.0f} MiB")

    segments = eng.split_text(args.text, args.max_text_tokens, "en" if args.model == "2.5" else None)
    print(f"text: {len(segments)} segment(s) of at most {args.max_text_tokens} tokens; {codes} codes each "
          f"(stop token disabled); {args.steps} diffusion steps; "
          + ("greedy" if args.greedy else "upstream sampling, 3 beams"))
    settings = GenerationSettings(
        max_mel_tokens=codes, diffusion_steps=args.steps, max_text_tokens_per_segment=args.max_text_tokens,
        seed=0, lang="en" if args.model == "2.5" else None,
        **({"do_sample": False, "num_beams": 1} if args.greedy else {}),
    )
    clock = instrument(eng)
    with tempfile.TemporaryDirectory() as tmp:
        voice = write_clip(Path(tmp) / "voice.wav", args.ref_seconds)
        start = time.perf_counter()
        cpu_start = time.process_time()
        arrivals: list[float] = []
        samples = 0

        def arrived(seg: SegmentAudio) -> None:
            nonlocal samples
            arrivals.append(time.perf_counter() - start)
            samples += seg.audio.size

        eng.synthesize(SynthesisRequest(args.text, voice, Emotion(), settings), on_segment=arrived)
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu_start

    audio_seconds = samples / 22050
    print(f"\nreference clip {args.ref_seconds:.1f} s -> {len(arrivals)} segments, {audio_seconds:.2f} s of audio")
    print(f"{'stage':32s} {'seconds':>8s} {'calls':>6s}")
    for stage, sec in clock.seconds.items():
        print(f"{stage:32s} {sec:8.2f} {clock.calls[stage]:6d}")
    other = total - sum(clock.seconds.values())
    print(f"{'other (audio load, mel, fbank...)':32s} {other:8.2f}")
    print(f"{'total':32s} {total:8.2f}   (process CPU {cpu:.1f} s = {cpu / args.threads:.1f} s per thread: "
          "the wall time on idle cores)")
    per_segment = [b - a for a, b in zip([0.0, *arrivals], arrivals)]
    print(f"time to first segment: {arrivals[0]:.2f} s; per segment: " + ", ".join(f"{s:.2f}" for s in per_segment)
          + " s")
    print(f"real-time factor: {total / audio_seconds:.2f} (wall seconds per second of audio)")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB; load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if not args.no_floors:
        with tempfile.TemporaryDirectory() as tmp:  # another clip of the same length: nothing comes from a cache
            voice = write_clip(Path(tmp) / "voice.wav", args.ref_seconds, seed=1)
            print_floors(eng, clock, SynthesisRequest(args.text, voice, Emotion(), settings))


if __name__ == "__main__":
    main()
