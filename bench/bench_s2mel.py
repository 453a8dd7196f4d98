"""Time s2mel (length regulator + 25-step CFM) with the real configuration and random weights on CPU.

    python bench/bench_s2mel.py [--config data/config.yaml] [--threads 2] [--steps 25] [--plain]

Cases: the upstream reference case (861 prompt frames = 10 s reference, 172 generated frames = 100 codes) and
10 s of output audio (861 generated frames). ``--plain`` also times the sampler written out with a full estimator
call per step (no precomputed conditioning, no skipped prompt frames) for comparison.
Prints seconds per stage (wall clock, and process CPU time divided by the thread count, which is what the wall
clock would be on idle cores) and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from common import Work, count_flops, floor_line, machine_rates, real_config_path, weight_bytes  # noqa: E402

from core.config import load_config  # noqa: E402
from core.s2mel import S2Mel, mel_frames_for_codes  # noqa: E402
from core.s2mel.dit import DiT  # noqa: E402

HOP_SECONDS = 256 / 22050


def default_config() -> Path:
    return real_config_path()


def plain_euler(est: DiT, mu, prompt, style, noise, steps: int, rate: float) -> torch.Tensor:
    tp = prompt.shape[-1]
    x = noise.clone()
    x[..., :tp] = 0
    prompt_x = torch.zeros_like(x)
    prompt_x[..., :tp] = prompt
    span = torch.linspace(0, 1, steps + 1)
    t = span[0]
    lens = torch.tensor([x.shape[-1]])
    for k in range(1, steps + 1):
        dt = span[k] - span[k - 1]
        v = est(torch.cat([x, x]), torch.cat([prompt_x, 0 * prompt_x]), lens, t.repeat(2),
                torch.cat([style, 0 * style]), torch.cat([mu, 0 * mu]))
        x = x + dt * ((1 + rate) * v[:1] - rate * v[1:])
        t = t + dt
        x[..., :tp] = 0
    return x


def cfm_work(model: S2Mel, mu: torch.Tensor, frames: int, ref_mel: torch.Tensor, style: torch.Tensor,
             steps: int) -> Work:
    """FLOPs of a ``steps``-step CFM (counted for 1 and 2 steps: the condition once plus a per-step part) and its
    bytes (every estimator weight read once per step; activations not counted, so a lower bound)."""
    def run(n: int) -> int:
        return count_flops(lambda: model.cfm.inference(mu, frames, ref_mel, style, steps=n, cfg_rate=0.7))[1]

    one, two = run(1), run(2)
    per_step = two - one
    return Work(one - per_step + steps * per_step, steps * weight_bytes(model.cfm.estimator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="IndexTTS-2 config.yaml (default: reference data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--prompt-frames", type=int, default=861)
    parser.add_argument("--codes", type=int, nargs="+", default=[100, 500], help="generated codes per case")
    parser.add_argument("--plain", action="store_true", help="also time the plain sampler (slow)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full = load_config(args.config or default_config())
    cfg = full.require("s2mel")
    gpt_dim = full.gpt.model_dim if full.gpt is not None else 1280
    model = S2Mel(cfg, gpt_dim=gpt_dim).eval()
    est = model.cfm.estimator
    n_params = sum(p.numel() for p in model.parameters())
    print(f"s2mel random weights: {n_params / 1e6:.1f} M parameters, DiT {cfg.DiT.hidden_dim} x {cfg.DiT.depth}, "
          f"wavenet {cfg.wavenet.hidden_dim} x {cfg.wavenet.num_layers}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps")

    print(f"machine: {machine_rates()}")
    tp = args.prompt_frames
    n_mels = cfg.DiT.in_channels
    sem_frames = round(tp * 50 * 256 / 22050)
    s_ref = torch.randn(1, sem_frames, cfg.length_regulator.in_channels)
    ref_mel = torch.randn(1, n_mels, tp) - 5
    style = torch.randn(1, cfg.style_encoder.dim)
    with torch.inference_mode():
        model.cfm.inference(  # warm-up (allocator, kernels)
            torch.randn(1, 64, cfg.length_regulator.channels), 64, ref_mel[..., :32], style, steps=1
        )

    for codes in args.codes:
        latent = torch.randn(1, codes, gpt_dim)
        vq = torch.randn(1, codes, cfg.length_regulator.in_channels)
        target = mel_frames_for_codes(torch.tensor([codes]))
        t0 = time.perf_counter()
        with torch.inference_mode():
            prompt_cond = model.length_regulator(s_ref, torch.tensor([tp]))
            cond = model.length_regulator(vq + model.gpt_layer(latent), target)
            mu = torch.cat([prompt_cond, cond], dim=1)
        t_lr = time.perf_counter() - t0
        frames = mu.shape[1]
        noise = torch.randn(1, n_mels, frames)
        t0, c0 = time.perf_counter(), time.process_time()
        mel = model.cfm.inference(mu, frames, ref_mel, style, steps=args.steps, cfg_rate=0.7, noise=noise)
        t_cfm, c_cfm = time.perf_counter() - t0, time.process_time() - c0
        out_s = (frames - tp) * HOP_SECONDS
        print(f"case {tp} prompt + {frames - tp} generated frames ({codes} codes, {out_s:.2f} s audio): "
              f"regulator+gpt_layer {t_lr:.3f} s, CFM {t_cfm:.2f} s "
              f"({t_cfm / args.steps:.3f} s/step; process CPU {c_cfm:.1f} s = {c_cfm / args.threads:.1f} s on "
              f"{args.threads} idle cores), {10 * (t_lr + t_cfm) / out_s:.1f} s per 10 s of output audio")
        print("    " + floor_line("CFM", t_cfm, cfm_work(model, mu, frames, ref_mel, style, args.steps)))
        if args.plain:
            t0 = time.perf_counter()
            with torch.inference_mode():
                want = plain_euler(est, mu, ref_mel, style, noise, args.steps, 0.7)
            t_plain = time.perf_counter() - t0
            diff = (want - mel).abs().max().item()
            print(f"    plain sampler (full estimator call per step): {t_plain:.2f} s; max |diff| {diff:.2e}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 1024 if sys.platform != "darwin" else peak / 2**20
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
