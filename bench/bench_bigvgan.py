"""BigVGAN v2 speed on the CPU: the real 22 kHz/80-band/256x configuration with random weights.

Prints seconds per 10 s of output audio (861 mel frames), the real-time factor and the peak RSS.
``--compare`` also times the anti-aliased activation in upstream's formulation (padded transposed conv + crop,
stride-2 conv) against our polyphase one, at every stage's shape.

    python bench/bench_bigvgan.py [--threads 2] [--frames 861] [--compare]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Work, best_seconds, count_flops, floor_line, machine_rates, weight_bytes  # noqa: E402

from core.bigvgan import Activation1d, BigVGAN, BigVGANConfig  # noqa: E402

REAL = dict(  # nvidia/bigvgan_v2_22khz_80band_256x config.json
    num_mels=80,
    upsample_rates=[4, 4, 2, 2, 2, 2],
    upsample_kernel_sizes=[8, 8, 4, 4, 4, 4],
    upsample_initial_channel=1536,
    resblock="1",
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    activation="snakebeta",
    snake_logscale=True,
    use_tanh_at_final=False,
    use_bias_at_final=False,
    sampling_rate=22050,
    hop_size=256,
)


def random_model() -> BigVGAN:
    torch.manual_seed(0)
    model = BigVGAN(BigVGANConfig.from_dict(REAL)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.normal_(0.0, 0.01)  # upstream init_weights
            elif name.endswith((".alpha", ".beta")):
                p.normal_(0.0, 0.3)
    return model


def upstream_style(act: Activation1d, x: torch.Tensor) -> torch.Tensor:
    """The same activation computed as upstream does (pad 5, 2*conv_transpose, crop 15, act, pad 5/6, stride-2 conv)."""
    c = x.shape[1]
    h = act.upsample.filter.expand(c, -1, -1)
    u = 2 * F.conv_transpose1d(F.pad(x, (5, 5), mode="replicate"), h, stride=2, groups=c)[..., 15:-15]
    z = act.act(u)
    return F.conv1d(F.pad(z, (5, 6), mode="replicate"), act.downsample.lowpass.filter.expand(c, -1, -1), stride=2,
                    groups=c)


def _time(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=861, help="mel frames (861 = 10 s at 22050 Hz / hop 256)")
    ap.add_argument("--compare", action="store_true", help="also time the activation against upstream's formulation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = random_model()
    n_params = sum(p.numel() for p in model.parameters())
    mel = torch.randn(1, REAL["num_mels"], args.frames) - 5.0
    audio_s = args.frames * REAL["hop_size"] / REAL["sampling_rate"]
    with torch.inference_mode():
        wav = model(mel[..., :8])  # warm-up (oneDNN primitive creation)
        cpu0 = time.process_time()
        seconds = _time(lambda: model(mel))
        cpu = time.process_time() - cpu0
    assert wav.shape[-1] == 8 * REAL["hop_size"]
    per10 = seconds * 10.0 / audio_s
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"BigVGAN v2 real config ({n_params / 1e6:.1f} M params, random weights), CPU, {args.threads} threads, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  {args.frames} frames = {audio_s:.2f} s of audio: {seconds:.2f} s "
          f"-> {per10:.2f} s per 10 s of audio, RTF {seconds / audio_s:.3f} (upstream reports ~1.4 s per 1 s)")
    print(f"  process CPU time {cpu:.2f} s ({cpu / seconds:.2f} cores busy on average)")
    with torch.inference_mode():
        flops = count_flops(lambda: model(mel))[1]
    print(f"  machine: {machine_rates()}")
    print("  " + floor_line(f"BigVGAN, {args.frames} frames", seconds, Work(flops, weight_bytes(model))))
    print(f"  peak RSS {rss_mb:.0f} MB")

    if args.compare:
        print("  anti-aliased activation, one call at each stage's shape, best of 3 (ms):")
        print("    stage     C       L   cpu-blocks  convolutions  upstream-form  speedup  max|diff|")
        c, n = REAL["upsample_initial_channel"], args.frames
        with torch.inference_mode():
            for i, u in enumerate(REAL["upsample_rates"]):
                c, n = c // 2, n * u
                act = model.resblocks[3 * i].activations[0]
                x = torch.randn(1, c, n)
                act.use_blocks = True
                blocks = best_seconds(lambda act=act, x=x: act(x)) * 1e3
                act.use_blocks = False
                convs = best_seconds(lambda act=act, x=x: act(x)) * 1e3
                act.use_blocks = None
                theirs = best_seconds(lambda act=act, x=x: upstream_style(act, x)) * 1e3
                diff = float((act(x) - upstream_style(act, x)).abs().max())
                print(f"    {i:5d} {c:5d} {n:7d} {blocks:12.1f} {convs:13.1f} {theirs:14.1f} {theirs / blocks:8.2f}x"
                      f"  {diff:.1e}")


if __name__ == "__main__":
    main()
