"""Streaming inside a segment vs the non-streamed render, at the released sizes (random weights, CPU).

The engine of ``bench_e2e.py`` (every stage at its config.yaml size, random weights, the GPT's stop token disabled
so each segment decodes exactly ``--codes`` codes). Each case runs the same request twice through the engine,
``settings.stream`` off and on, both with one beam and the same seed, so both decode the same codes, and both with
the same diffusion noise at the same frames (the engine's noise seam), so what differs is the chunking alone.
The voice and emotion features are prepared (cached) first, so neither run pays for them.

Prints, per case: the time to the first audio (the first ``on_chunk`` call: the first chunk streamed, the first
segment not streamed), the total time, the stage seconds, the chunk sizes, and the mel spectral distance of the
two renders of the same codes (RMS over all mel bins and frames of the log-mel difference, in dB; random weights:
it measures how far the chunked render departs from the whole one, not how either sounds). The last line is the
1-segment case: ``first-audio ratio R (streamed S s / non-streamed N s); total ratio T``.

    python bench/bench_stream.py [--codes 100] [--steps 25] [--ref-seconds 10] [--threads 2]
                                 [--first-codes 24] [--max-codes 100] [--overlap 4] [--prompt-seconds 3 (0: all)]
    python bench/bench_stream.py --quick        # the 1-segment case only, 10 diffusion steps

The CPU may be shared: the load average is printed before and after; compare figures of one run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_e2e import build_engine, write_clip  # noqa: E402
from common import peak_rss_mib, real_config, real_config_path  # noqa: E402

from core.api import AudioChunk, GenerationSettings, SynthesisRequest, SynthesisResult  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.features import mel_spectrogram  # noqa: E402
from core.streaming import StreamPlan, frames_for_codes  # noqa: E402

ONE = "The old lighthouse keeper climbed the spiral stairs every evening, counting each step aloud."
THREE = ("The old lighthouse keeper climbed the spiral stairs every evening. "
         "When the great lamp finally turned, its beam swept across the dark water. "
         "Nobody in the village could remember a single night when the light had failed.")
DB = 20.0 / math.log(10.0)  # natural-log magnitude -> dB


@dataclass
class Run:
    result: SynthesisResult
    first: float  # seconds from the call to the first on_chunk
    total: float
    first_cpu: float  # the same in process CPU seconds / threads (the wall time on idle cores)
    total_cpu: float
    chunks: list[int] = field(default_factory=list)  # samples per chunk


def fixed_noise(segments: int, frames: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    return {i: torch.randn(1, 80, frames, generator=gen) for i in range(segments)}


def timed(eng: Engine, request: SynthesisRequest, noise: dict[int, torch.Tensor]) -> tuple[Run, list[list[int]]]:
    arrivals: list[tuple[float, float]] = []
    sizes: list[int] = []
    threads = torch.get_num_threads()

    def on_chunk(chunk: AudioChunk) -> None:
        arrivals.append((time.perf_counter(), time.process_time()))
        sizes.append(chunk.audio.size)

    start, cpu = time.perf_counter(), time.process_time()
    result, _, traces, _ = eng.synthesize_traced(request, noise=lambda i, n: noise[i][..., :n], on_chunk=on_chunk)
    end, cpu_end = time.perf_counter(), time.process_time()
    run = Run(result, arrivals[0][0] - start, end - start, (arrivals[0][1] - cpu) / threads, (cpu_end - cpu) / threads,
              sizes)
    return run, [t.codes.tolist() for t in traces]


def mel_distance_db(a: np.ndarray, b: np.ndarray) -> float:
    """RMS of the log-mel difference in dB (s2mel's mel: 1024/256, 80 bins, magnitude floor 1e-5)."""
    ma = mel_spectrogram(torch.from_numpy(a.astype(np.float32) / 32767.0)[None])
    mb = mel_spectrogram(torch.from_numpy(b.astype(np.float32) / 32767.0)[None])
    return float(torch.sqrt(torch.mean((DB * (ma - mb)) ** 2)))


def case(eng: Engine, voice: Path, text: str, max_text: int, args: argparse.Namespace) -> tuple[Run, Run]:
    segments = eng.split_text(text, max_text)
    settings = GenerationSettings(num_beams=1, max_mel_tokens=args.codes, diffusion_steps=args.steps, seed=0,
                                  max_text_tokens_per_segment=max_text)
    ref_frames = eng.prepare_voice(voice).ref_mel.shape[-1]
    noise = fixed_noise(len(segments), ref_frames + frames_for_codes(args.codes))
    print(f"\n== {len(segments)} segment(s) of {args.codes} codes ({args.codes / 50:.1f} s each), "
          f"{args.steps} diffusion steps, reference {args.ref_seconds:.0f} s ({ref_frames} frames); load "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    plain, codes_plain = timed(eng, SynthesisRequest(text, voice, settings=settings), noise)
    streamed, codes_streamed = timed(eng, SynthesisRequest(text, voice, settings=settings.__class__(
        **{**settings.to_dict(), "stream": True})), noise)
    same = codes_plain == codes_streamed
    for name, run in (("non-streamed", plain), ("streamed", streamed)):
        t = run.result.timings
        stages = ", ".join(f"{k} {t.get(k, 0.0):.1f}" for k in ("gpt", "gpt_latent", "s2mel", "vocoder"))
        print(f"{name:13s} first audio {run.first:7.2f} s, total {run.total:7.2f} s ({stages}); "
              f"{len(run.chunks)} chunk(s); CPU/threads: first {run.first_cpu:.2f} s, total {run.total_cpu:.2f} s",
              flush=True)
    print("stream chunks (samples): " + ", ".join(map(str, streamed.chunks)))
    print(f"same codes: {same}; samples {streamed.result.audio.size} streamed, {plain.result.audio.size} not")
    if same and streamed.result.audio.size == plain.result.audio.size:
        print(f"mel spectral distance, streamed vs non-streamed render of the same codes: "
              f"{mel_distance_db(streamed.result.audio, plain.result.audio):.2f} dB RMS")
    print(f"first-audio ratio {streamed.first / plain.first:.3f}; total ratio {streamed.total / plain.total:.3f} "
          f"(CPU/threads: {streamed.first_cpu / plain.first_cpu:.3f}; {streamed.total_cpu / plain.total_cpu:.3f}); "
          "load " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    return streamed, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", type=int, default=100, help="mel codes per segment (exactly; 50 = 1 s)")
    parser.add_argument("--steps", type=int, default=25, help="diffusion steps")
    parser.add_argument("--ref-seconds", type=float, default=10.0, help="length of the reference clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first-codes", type=int, default=StreamPlan.first_codes)
    parser.add_argument("--max-codes", type=int, default=StreamPlan.max_codes)
    parser.add_argument("--overlap", type=int, default=StreamPlan.overlap_codes)
    parser.add_argument("--prompt-seconds", type=float, default=StreamPlan.prompt_seconds,
                        help="reference seconds each chunk's diffusion reads (0: the whole reference)")
    parser.add_argument("--quick", action="store_true", help="only the 1-segment case, 10 diffusion steps")
    args = parser.parse_args()
    if args.quick:
        args.steps = 10
    torch.set_num_threads(args.threads)
    cfg = real_config()
    t0 = time.perf_counter()
    eng, _ = build_engine(cfg, real_config_path().parent / cfg.bpe_model)
    eng.stream_plan = StreamPlan(first_codes=args.first_codes, max_codes=args.max_codes, overlap_codes=args.overlap,
                                 prompt_seconds=args.prompt_seconds or None)
    print(f"torch {torch.__version__}, {args.threads} threads; models built in {time.perf_counter() - t0:.1f} s; "
          f"stream plan {eng.stream_plan}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        voice = write_clip(Path(tmp) / "voice.wav", args.ref_seconds)
        eng.prepare_voice(voice)
        eng.emotion_features(voice)
        if not args.quick:
            case(eng, voice, THREE, 24, args)
        streamed, plain = case(eng, voice, ONE, 120, args)
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    print(f"first-audio ratio {streamed.first / plain.first:.3f} (streamed {streamed.first:.2f} s / non-streamed "
          f"{plain.first:.2f} s); total ratio {streamed.total / plain.total:.3f}")


if __name__ == "__main__":
    main()
