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
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_s2mel import default_config  # noqa: E402

from core.config import load_config  # noqa: E402
from core.s2mel import S2Mel, mel_frames_for_codes  # noqa: E402
from core.s2mel.cfm import fast_dtype  # noqa: E402


def distance(got: torch.Tensor, want: torch.Tensor) -> str:
    diff = (got.double() - want.double()).abs()
    span = (want.max() - want.min()).item()
    corr = torch.corrcoef(torch.stack([got.flatten(), want.flatten()]).double())[0, 1].item()
    return (f"max abs {diff.max().item():.4f}, mean abs {diff.mean().item():.4f}, "
            f"max abs / range {diff.max().item() / span:.4f} (range {span:.2f}), corr {corr:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="IndexTTS-2 config.yaml (default: reference data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--few-steps", type=int, default=10, help="exact mode with this many steps, for comparison")
    parser.add_argument("--prompt-frames", type=int, default=861)
    parser.add_argument("--codes", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
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
