"""Time the w2v-BERT 2.0 semantic features (hidden state 17, normalised) on CPU with full-size weights.

    python bench/bench_w2vbert.py                       # random weights built in memory
    python bench/bench_w2vbert.py --from-disk           # random weights saved as an HF folder, then loaded
    python bench/bench_w2vbert.py --model-dir DIR --stats wav2vec2bert_stats.pt   # the real files

Random weights use the real facebook/w2v-bert-2.0 sizes (hidden 1024, 24 layers, 16 heads, intermediate 4096),
which is all that matters for the cost. Prints seconds (load and each run) and peak RSS of this process.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Work, count_flops, floor_line, machine_rates, weight_bytes  # noqa: E402

from core.w2vbert import SemanticEncoder, W2VBert, W2VBertConfig  # noqa: E402

# The sizes of the released facebook/w2v-bert-2.0 config.json (the file itself is not needed here).
REAL_CONFIG = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "feature_projection_input_dim": 160,
    "left_max_position_embeddings": 64,
    "right_max_position_embeddings": 8,
    "conv_depthwise_kernel_size": 31,
    "layer_norm_eps": 1e-5,
    "position_embeddings_type": "relative_key",
    "hidden_act": "swish",
    "add_adapter": False,
    "mask_time_prob": 0.05,
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def random_encoder() -> SemanticEncoder:
    cfg = W2VBertConfig.from_hf(REAL_CONFIG, source="REAL_CONFIG")
    hidden = cfg.hidden_size
    return SemanticEncoder(W2VBert(cfg).eval(), torch.randn(hidden) * 0.5, torch.rand(hidden) + 0.5).eval()


def write_random_files(directory: Path) -> None:
    """An HF folder + stats file with random full-size weights (run in a child so its memory is not counted)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = W2VBert(W2VBertConfig.from_hf(REAL_CONFIG, source="REAL_CONFIG"))
    model_dir = directory / "w2v-bert-2.0"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(REAL_CONFIG), encoding="utf-8")
    save_file(model.state_dict(), str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    hidden = REAL_CONFIG["hidden_size"]
    torch.save({"mean": torch.randn(hidden) * 0.5, "var": torch.rand(hidden) + 0.5}, directory / "stats.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (16 kHz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--from-disk", action="store_true", help="save random weights, then time loading them")
    parser.add_argument("--model-dir", type=Path, help="a real w2v-bert-2.0 folder (needs --stats)")
    parser.add_argument("--stats", type=Path, help="wav2vec2bert_stats.pt")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.write:
        write_random_files(args.write)
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.from_disk and not args.model_dir:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write", tmp], check=True)
            print(f"wrote random full-size weights in {time.perf_counter() - t0:.1f} s (child process)")
            args.model_dir, args.stats = Path(tmp) / "w2v-bert-2.0", Path(tmp) / "stats.pt"
        t0 = time.perf_counter()
        if args.model_dir:
            if not args.stats:
                parser.error("--model-dir needs --stats")
            encoder = SemanticEncoder.from_files(args.model_dir, args.stats)
            how = f"loaded {args.model_dir}"
        else:
            encoder = random_encoder()
            how = "built with random init"
        n_params = sum(p.numel() for p in encoder.parameters())
        print(f"model {how} in {time.perf_counter() - t0:.1f} s: {encoder.model.num_layers} layers kept, "
              f"{n_params / 1e6:.0f} M params; peak RSS so far {peak_rss_mib():.0f} MiB")

    frames = math.ceil((1 + (int(args.seconds * 16000) - 400) // 160) / 2)  # 2 fbank frames per row
    feats = torch.randn(1, frames, encoder.model.config.feature_projection_input_dim)
    mask = torch.ones(1, frames, dtype=torch.int64)
    print(f"clip {args.seconds:g} s -> input_features {tuple(feats.shape)}, {args.threads} CPU threads")
    walls = []
    for i in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = encoder.embed(feats, mask)
        walls.append(time.perf_counter() - t0)
        print(f"run {i + 1}: w2v-BERT hidden_states[17] + stats: {walls[-1]:.2f} s wall, "
              f"{time.process_time() - c0:.2f} s CPU -> {tuple(out.shape)}")
    walls.sort()
    print(f"w2v-BERT semantic features, {args.seconds:g} s clip: best {walls[0]:.2f} s, "
          f"median {walls[len(walls) // 2]:.2f} s wall (a busy shared machine inflates these)")
    print(f"machine: {machine_rates()}")
    flops = count_flops(lambda: encoder.embed(feats, mask))[1]
    print(floor_line("w2v-BERT (median run)", walls[len(walls) // 2], Work(flops, weight_bytes(encoder))))
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
