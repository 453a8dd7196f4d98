"""Time the semantic codec and CAMPPlus on CPU with full-size random weights.

    python bench/bench_codec_campplus.py [--seconds 10] [--threads 2] [--repeat 3]

Real sizes: codec = config.yaml ``semantic_codec`` (vocos_dim 384, intermediate 2048, 12 layers, codebook
8192 x 8, hidden 1024), CAMPPlus = ``CAMPPlus(feat_dim=80, embedding_size=192)``. Both checkpoints are first
written in the released layout (weight-norm pairs, codec decoder included, BatchNorm counters) to a temporary
folder so the strict loaders are timed too. Random weights do not change the cost. Prints seconds per stage
and peak RSS.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import peak_rss_mib, real_config  # noqa: E402

from core.campplus import CAMPPlus, CAMPPlusConfig  # noqa: E402
from core.config import SemanticCodecConfig  # noqa: E402
from core.semantic_codec import SemanticCodec  # noqa: E402

REAL_CODEC = real_config().require("semantic_codec")  # the released checkpoints/config.yaml


def write_codec_file(path: Path, cfg: SemanticCodecConfig) -> None:
    """A random codec in the released layout: weight-norm g/v pairs and a decoder copy of the encoder."""
    state = {}
    for key, value in SemanticCodec(cfg).state_dict().items():
        if key.endswith("_project.weight"):
            stem = key[: -len(".weight")]
            state[stem + ".weight_g"] = value.norm(dim=(1, 2), keepdim=True)
            state[stem + ".weight_v"] = value
        else:
            state[key] = value
        if key.startswith("encoder."):
            state["decoder." + key[len("encoder.") :]] = value.clone()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def write_files(codec_file: Path, campplus_file: Path) -> None:
    torch.manual_seed(0)
    write_codec_file(codec_file, REAL_CODEC)
    torch.save(CAMPPlus(CAMPPlusConfig()).state_dict(), campplus_file)


def timed(label: str, fn, repeat: int = 1):
    result = None
    for i in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        suffix = f" (run {i + 1})" if repeat > 1 else ""
        print(f"{label}{suffix}: {time.perf_counter() - t0:.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="reference clip length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # w2v-BERT: 16 kHz fbank (25/10 ms) stacked by 2 -> ~50 frames/s; CAMPPlus: the 100 frames/s fbank.
    fbank_frames = 1 + (int(args.seconds * 16000) - 400) // 160
    codec_frames = (fbank_frames + 1) // 2
    print(f"clip {args.seconds:g} s: codec input [1, {codec_frames}, {REAL_CODEC.hidden_size}], "
          f"CAMPPlus input [1, {fbank_frames}, 80]; {args.threads} CPU threads")

    with tempfile.TemporaryDirectory() as tmp:
        codec_file = Path(tmp) / "model.safetensors"
        campplus_file = Path(tmp) / "campplus_cn_common.bin"
        # Written by a child process so that this process's peak RSS covers only loading and inference.
        writer = multiprocessing.get_context("fork").Process(target=write_files, args=(codec_file, campplus_file))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit("writing the random checkpoints failed")
        print(f"wrote random checkpoints: codec {codec_file.stat().st_size / 2**20:.1f} MiB, "
              f"CAMPPlus {campplus_file.stat().st_size / 2**20:.1f} MiB")

        codec = timed("load semantic codec (strict, decoder checked and dropped)",
                      lambda: SemanticCodec.from_file(codec_file, REAL_CODEC))
        print(f"peak RSS after codec load {peak_rss_mib():.0f} MiB")
        campplus = timed("load CAMPPlus (strict, widths from weights)", lambda: CAMPPlus.from_checkpoint(campplus_file))
        print(f"peak RSS after CAMPPlus load {peak_rss_mib():.0f} MiB")

    x = torch.randn(1, codec_frames, REAL_CODEC.hidden_size)
    feats = torch.randn(1, fbank_frames, 80)
    with torch.inference_mode():
        codes, _ = timed("codec.quantize", lambda: codec.quantize(x), args.repeat)
        timed("codec.vq2emb", lambda: codec.vq2emb(codes), args.repeat)
        style = timed("CAMPPlus style", lambda: campplus(feats), args.repeat)
    print(f"codes {tuple(codes.shape)}, style {tuple(style.shape)}; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
