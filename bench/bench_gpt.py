"""GPT (UnifiedVoice v2) decode speed on the CPU: the real configuration with random weights.

24 layers, 1280 wide, 20 heads; batch 1, fp32; a prompt of 34 conditioning rows + a ``--text``-token text segment
(+ start/stop) and then exactly ``--tokens`` decode steps (the stop token is disabled). Runs beams 1 and beams 3
with upstream's default sampling settings and prints prefill seconds, steps/s, ms/step for the first and the last
quarter of the steps (flat = no growth beyond attention) and the peak RSS.

    python bench/bench_gpt.py [--threads 2] [--text 120] [--tokens 200] [--beams 1 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Work, count_flops, floor_line, machine_rates, peak_rss_mib, real_config, weight_bytes  # noqa: E402

from core.config import GPTConfig  # noqa: E402
from core.gpt import DecodeTrace, GenerationConfig, UnifiedVoice  # noqa: E402
from core.gpt.generate import generate  # noqa: E402
from core.gpt.model import few_rows_linear  # noqa: E402

REAL = real_config().require("gpt")  # the released checkpoints/config.yaml


def random_model(cfg: GPTConfig, campplus: bool = False) -> UnifiedVoice:
    """Random weights at ``cfg``'s size (``campplus``: IndexTTS-2.5's GPT), the stop token never chosen."""
    with torch.device("meta"):
        model = UnifiedVoice(cfg, campplus=campplus)
    model = model.to_empty(device="cpu").eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
        for _name, b in model.named_buffers():
            b.zero_()
        model.mel_head.bias[cfg.stop_mel_token] = -1e4  # never stop: exactly --tokens steps
    model.prepare_for_inference()
    return model


def matmul_floor_ms(model: UnifiedVoice, rows: int, repeat: int = 5) -> float:
    """Median time of just the step's weight matmuls (every Conv1D + mel_head) for ``rows`` rows.

    Measured right next to the decode so a busy machine slows both alike; decode ms/step minus this is the
    cost of attention, norms, sampling and Python.
    """
    weights = [m.weight.t() for m in model.gpt.modules() if hasattr(m, "store_out_major")]
    weights.append(model.mel_head.weight)
    inputs = [torch.randn(rows, w.shape[1]) for w in weights]
    times = []
    with torch.inference_mode():
        for _ in range(repeat):
            start = time.perf_counter()
            for w, x in zip(weights, inputs):
                few_rows_linear(x, w, None)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def decode_step_work(model: UnifiedVoice, text: list[int], spk_latent: torch.Tensor, emovec: torch.Tensor,
                     settings: GenerationConfig, prompt_rows: int) -> Work:
    """FLOPs (counted: a whole decode minus a one-step decode, per step) and bytes of one mean decode step: every
    transformer weight, the final norms and mel_head read once, plus the keys and values attended to."""
    def run(tokens: int) -> int:
        one = GenerationConfig(do_sample=settings.do_sample, num_beams=settings.num_beams, max_mel_tokens=tokens)
        return count_flops(lambda: generate(model, text, spk_latent, emovec, one,
                                            generator=torch.Generator().manual_seed(2)))[1]

    steps = settings.max_mel_tokens - 1
    flops = (run(settings.max_mel_tokens) - run(1)) / steps
    cfg = model.cfg
    mean_entries = prompt_rows + settings.num_beams * (1 + settings.max_mel_tokens) / 2
    kv = 2 * cfg.layers * mean_entries * cfg.model_dim * model.dtype.itemsize
    weights = weight_bytes(model.gpt) + weight_bytes(model.final_norm) + weight_bytes(model.mel_head)
    return Work(flops, weights + kv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text", type=int, default=120, help="text tokens in the prompt")
    parser.add_argument("--tokens", type=int, default=200, help="decode steps")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = random_model(REAL)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: {params:.0f} M params, built in {time.perf_counter() - t0:.1f} s, "
          f"RSS {peak_rss_mib():.0f} MB; torch {torch.__version__}, {args.threads} threads")
    g = torch.Generator().manual_seed(1)
    text = torch.randint(2, REAL.number_text_tokens, (args.text,), generator=g).tolist()
    spk_latent = torch.randn(1, 32, REAL.model_dim, generator=g)
    emovec = torch.randn(1, REAL.model_dim, generator=g) * 0.1
    prompt_rows = REAL.condition_num_latent + 2 + args.text + 2 + 1
    print("load average before: %.1f %.1f %.1f" % os.getloadavg())
    print(f"machine: {machine_rates()}")

    # warm-up (allocator, kernels)
    generate(model, text, spk_latent, emovec, GenerationConfig(num_beams=3, max_mel_tokens=4), generator=g)

    for beams in args.beams:
        settings = GenerationConfig(do_sample=True, num_beams=beams, max_mel_tokens=args.tokens)
        floor_before = matmul_floor_ms(model, beams)
        trace = DecodeTrace()
        start = time.perf_counter()
        codes, hit_max = generate(model, text, spk_latent, emovec, settings, generator=g, trace=trace)
        total = time.perf_counter() - start
        floor = (floor_before + matmul_floor_ms(model, beams)) / 2
        assert hit_max and len(codes) == args.tokens, (len(codes), hit_max)
        stamps = trace.step_times
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        q = max(1, len(steps) // 4)
        prefill = stamps[0] - start
        decode = stamps[-1] - stamps[0]
        print(
            f"beams {beams}: prompt {prompt_rows} rows, prefill {prefill:.2f} s; {len(steps)} steps in {decode:.2f} s"
            f" = {len(steps) / decode:.2f} steps/s ({1000 * decode / len(steps):.1f} ms/step; median first quarter "
            f"{1000 * statistics.median(steps[:q]):.1f} ms, last quarter "
            f"{1000 * statistics.median(steps[-q:]):.1f} ms); "
            f"total {total:.2f} s; peak RSS {peak_rss_mib():.0f} MB"
        )
        print(f"  weight-matmul floor for {beams} row(s), measured around the run: {floor:.1f} ms/step "
              f"(decode at {100 * floor * len(steps) / (1000 * decode):.0f} % of it)")
        work = decode_step_work(model, text, spk_latent, emovec, settings, prompt_rows)
        print("  " + floor_line(f"mean decode step, beams {beams}", decode / len(steps), work))
    print("load average after: %.1f %.1f %.1f" % os.getloadavg())


if __name__ == "__main__":
    main()
