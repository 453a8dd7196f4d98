"""Exact vs fast (reduced precision) s2mel CFM at the real configuration with random weights, and how far apart.

    python bench/bench_fast.py [--config data/config.yaml] [--threads 2] [--steps 25] [--few-steps 10]

Case: the upstream reference case (861 prompt frames, 172 generated frames = 100 codes), CFG 0.7, same noise.
Prints exact and fast seconds, the speedup, and the difference of the generated mel frames from exact mode
(max abs, mean abs, max abs relative to the exact mel's dynamic range, correlation); the same difference for
exact mode with fewer diffusion steps, for comparison. Random weights give random-looking mels, so the figures
are an indication of the numeric distance, not of audible quality.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_gpt import REAL as GPT_REAL  # noqa: E402
from bench_gpt import random_model as random_gpt  # noqa: E402
from bench_s2mel import default_config  # noqa: E402

from core.config import load_config  # noqa: E402
from core.gpt import DecodeTrace, GenerationConfig, UnifiedVoice  # noqa: E402
from core.gpt.generate import generate  # noqa: E402
from core.s2mel import S2Mel, mel_frames_for_codes  # noqa: E402
from core.s2mel.cfm import fast_dtype  # noqa: E402


def snr_db(got: torch.Tensor, want: torch.Tensor) -> float:
    """``10 log10(sum want^2 / sum (got - want)^2)`` of the mean-removed signals."""
    w = want.double() - want.double().mean()
    noise = (got.double() - want.double()).square().sum().clamp_min(1e-30)
    return 10 * torch.log10(w.square().sum() / noise).item()


def distance(got: torch.Tensor, want: torch.Tensor) -> str:
    diff = (got.double() - want.double()).abs()
    span = (want.max() - want.min()).item()
    corr = torch.corrcoef(torch.stack([got.flatten(), want.flatten()]).double())[0, 1].item()
    return (f"SNR {snr_db(got, want):.1f} dB, max abs {diff.max().item():.4f}, mean abs {diff.mean().item():.4f}, "
            f"max abs / range {diff.max().item() / span:.4f} (range {span:.2f}), corr {corr:.5f}")


def teacher_forced_logits(model: UnifiedVoice, text: list[int], spk: torch.Tensor, emo: torch.Tensor,
                          codes: torch.Tensor) -> torch.Tensor:
    """The logits every decode step sees when it is fed ``codes`` (the decode's rows and positions, one causal pass):
    [n, vocab] float32, row s = the logits that choose code s."""
    with torch.inference_mode():
        rows = [model.prompt_embedding(text, spk.to(model.dtype), emo.to(model.dtype)),
                model.mel_input(torch.tensor([model.cfg.start_mel_token]), 0).unsqueeze(0)]
        rows += [model.mel_input(codes[s : s + 1], s + 2).unsqueeze(0) for s in range(codes.numel() - 1)]
        hidden = model.gpt(torch.cat(rows, dim=1))
        return model.mel_logits(hidden[0, -codes.numel() :])


def decode_ms_per_step(model: UnifiedVoice, text: list[int], spk: torch.Tensor, emo: torch.Tensor, beams: int,
                       tokens: int) -> tuple[float, float, torch.Tensor]:
    """Median wall ms per decode step, process CPU ms per step, and the codes (sampling, ``beams`` beams)."""
    trace = DecodeTrace()
    settings = GenerationConfig(do_sample=True, num_beams=beams, max_mel_tokens=tokens)
    c0 = time.process_time()
    codes, _ = generate(model, text, spk.to(model.dtype), emo.to(model.dtype), settings,
                        generator=torch.Generator().manual_seed(3), trace=trace)
    cpu = time.process_time() - c0
    steps = [b - a for a, b in zip(trace.step_times, trace.step_times[1:])]
    return 1000 * statistics.median(steps), 1000 * cpu / tokens, codes


def gpt_fast(tokens: int, text_tokens: int) -> None:
    """bf16 copy of the released-size GPT (random weights) against float32: decode speed and teacher-forced logits."""
    model = random_gpt(GPT_REAL)
    with torch.inference_mode(False), torch.no_grad():
        reduced = copy.deepcopy(model).to(torch.bfloat16)
    reduced.prepare_for_inference()
    g = torch.Generator().manual_seed(1)
    text = torch.randint(2, GPT_REAL.number_text_tokens, (text_tokens,), generator=g).tolist()
    spk = torch.randn(1, 32, GPT_REAL.model_dim, generator=g)
    emo = torch.randn(1, GPT_REAL.model_dim, generator=g) * 0.1
    for m in (model, reduced):  # warm-up
        generate(m, text, spk.to(m.dtype), emo.to(m.dtype), GenerationConfig(num_beams=3, max_mel_tokens=3))
    print(f"GPT {GPT_REAL.layers} x {GPT_REAL.model_dim} (random weights), decode of {tokens} codes, "
          f"{text_tokens} text tokens; load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    codes = torch.empty(0, dtype=torch.long)
    for beams in (1, 3):
        exact_ms, exact_cpu, got = decode_ms_per_step(model, text, spk, emo, beams, tokens)
        fast_ms, fast_cpu, _ = decode_ms_per_step(reduced, text, spk, emo, beams, tokens)
        codes = got if beams == 1 else codes
        print(f"  beams {beams}: float32 {exact_ms:.1f} ms/step (CPU {exact_cpu:.0f} ms/step), bfloat16 "
              f"{fast_ms:.1f} ms/step (CPU {fast_cpu:.0f} ms/step): x{exact_ms / fast_ms:.2f} wall, "
              f"x{exact_cpu / fast_cpu:.2f} CPU; load average {os.getloadavg()[0]:.1f}")
    want = teacher_forced_logits(model, text, spk, emo, codes).double()
    got = teacher_forced_logits(reduced, text, spk, emo, codes).double()
    kl = (want.softmax(-1) * (want.log_softmax(-1) - got.log_softmax(-1))).sum(-1)
    top1 = (want.argmax(-1) == got.argmax(-1)).double().mean().item()
    print(f"  teacher-forced logits over {codes.numel()} steps, bfloat16 vs float32: KL mean {kl.mean().item():.2e}, "
          f"max {kl.max().item():.2e} nats; top-1 agreement {100 * top1:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="IndexTTS-2 config.yaml (default: reference data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--few-steps", type=int, default=10, help="exact mode with this many steps, for comparison")
    parser.add_argument("--prompt-frames", type=int, default=861)
    parser.add_argument("--codes", type=int, default=100)
    parser.add_argument("--gpt-tokens", type=int, default=40, help="GPT decode steps for bf16 vs float32 (0: skip)")
    parser.add_argument("--gpt-only", action="store_true", help="only the GPT comparison")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.gpt_tokens:
        gpt_fast(args.gpt_tokens, 60)
    if args.gpt_only:
        return
    torch.manual_seed(0)
    full = load_config(args.config or default_config())
    cfg = full.require("s2mel")
    gpt_dim = full.gpt.model_dim if full.gpt is not None else 1280
    model = S2Mel(cfg, gpt_dim=gpt_dim).eval()
    device = torch.device("cpu")
    print(f"s2mel random weights, DiT {cfg.DiT.hidden_dim} x {cfg.DiT.depth}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fast dtype {fast_dtype(device)}")

    tp, n_mels = args.prompt_frames, cfg.DiT.in_channels
    sem_frames = round(tp * 50 * 256 / 22050)
    s_ref = torch.randn(1, sem_frames, cfg.length_regulator.in_channels)
    ref_mel = torch.randn(1, n_mels, tp) - 5
    style = torch.randn(1, cfg.style_encoder.dim)
    latent = torch.randn(1, args.codes, gpt_dim)
    vq = torch.randn(1, args.codes, cfg.length_regulator.in_channels)
    with torch.inference_mode():
        prompt_cond = model.length_regulator(s_ref, torch.tensor([tp]))
        cond = model.length_regulator(vq + model.gpt_layer(latent), mel_frames_for_codes(torch.tensor([args.codes])))
        mu = torch.cat([prompt_cond, cond], dim=1)
    frames = mu.shape[1]
    noise = torch.randn(1, n_mels, frames)
    for fast in (False, True):  # warm-up (allocator, kernels)
        model.cfm.inference(mu[:, :64], 64, ref_mel[..., :32], style, steps=1, noise=noise[..., :64], fast=fast)

    def run(steps: int, fast: bool) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        mel = model.cfm.inference(mu, frames, ref_mel, style, steps=steps, cfg_rate=0.7, noise=noise, fast=fast)
        return mel[..., tp:], time.perf_counter() - t0

    print(f"case {tp} prompt + {frames - tp} generated frames, {args.steps} steps, CFG 0.7")
    exact, t_exact = run(args.steps, False)
    print(f"  exact (float32): {t_exact:.2f} s ({t_exact / args.steps:.3f} s/step)")
    fast, t_fast = run(args.steps, True)
    print(f"  fast ({fast_dtype(device)}): {t_fast:.2f} s ({t_fast / args.steps:.3f} s/step), "
          f"speedup x{t_exact / t_fast:.2f}")
    print(f"  fast vs exact: {distance(fast, exact)}")
    if args.few_steps:
        few, t_few = run(args.few_steps, False)
        print(f"  exact, {args.few_steps} steps: {t_few:.2f} s, speedup x{t_exact / t_few:.2f}; "
              f"vs exact {args.steps} steps: {distance(few, exact)}")


if __name__ == "__main__":
    main()
