"""Time from a fresh process start to a loaded engine, on a full-size model folder in the official formats.

The first run writes a complete model folder with random weights (about 6.9 GB; ``--dir``, default
``$XDG_CACHE_HOME/indextts-bench-load``, kept for later runs): every checkpoint in the container, key set, shapes
and dtypes of the official file (``../shared/reference/fullsize/*.json``: ``gpt.pth`` flat, ``s2mel.pth`` with
``net`` plus optimizer state, the weight-norm ``weight_g``/``weight_v`` pairs, w2v-BERT 2.0 with all 24 layers and
``masked_spec_embed``, CAMPPlus with its BatchNorm counters, ``{"generator": ...}`` BigVGAN), laid out as
``core.models`` expects it. The released config.yaml, bpe.model, feat1/feat2 and w2v-BERT statistics come from the
reference set. The optional QwenEmotion model is left out: the engine loads it on first use.

Each timing run starts a new Python process (``--child``) that does what ``main.py`` does before the first word can
be spoken: import the engine and ``Engine.load`` the folder. The disk cache is warmed first (every file read once),
so the figures are those of a warm start. Printed: the seconds of each load stage (from the engine's progress
callback), the weights the loaded models hold, the child's RSS (peak, and anonymous vs file-backed at ready), the
RSS after every weight has been read once (as the first synthesis does; with memory-mapped checkpoints the pages
come in then), the load average, and as the last line ``ready in S s (load L s), peak RSS R MB``.

    python bench/bench_load.py [--dir DIR] [--repeat 1] [--device cpu] [--threads 2] [--no-touch]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

MARKER = ".bench-load-complete"
FORMAT_VERSION = "1"  # bump when the written folder changes
_DTYPES = {"float32": "float32", "F32": "float32", "int64": "int64", "I64": "int64"}
W2V_SIZES = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
             "output_hidden_size": 1024}


# ------------------------------------------------------------------------------------------- the model folder


def default_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "indextts-bench-load"


def _golden(name: str) -> dict[str, Any]:
    from reference import ref

    return json.loads(ref("fullsize", name).read_text(encoding="utf-8"))


def random_state(entries: Mapping[str, Any], fill: Callable[[str, Any], Any] | None = None) -> dict[str, Any]:
    """``{key: [shape, dtype]}`` -> tensors of that shape and dtype (small uniform floats, zero integers).

    ``fill(key, tensor)`` may overwrite a value in place (filters, positive scales)."""
    import torch

    out: dict[str, Any] = {}
    for key, (shape, dtype) in entries.items():
        kind = getattr(torch, _DTYPES[dtype])
        t = torch.empty(shape, dtype=kind)
        if kind.is_floating_point:
            t.uniform_(-0.02, 0.02)
        else:
            t.zero_()
        if fill is not None:
            fill(key, t)
        out[key] = t
    return out


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    from core.cli import write_atomic

    write_atomic(path, lambda tmp: torch.save(obj, tmp), overwrite=True)


def _save_safetensors(state: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    from core.cli import write_atomic

    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}), overwrite=True)


def _write_text(path: Path, text: str) -> None:
    from core.cli import write_atomic

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, write, overwrite=True)


def _bigvgan_fill(key: str, t: Any) -> None:
    from core.bigvgan import default_filter

    if key.endswith("filter"):
        t.copy_(default_filter().reshape(t.shape))
    elif key.endswith("weight_g"):
        t.uniform_(0.5, 1.5)


def _s2mel_file() -> dict[str, Any]:
    """``{'net': ..., 'optimizer': ..., 'scheduler': ..., 'iters': ..., 'epoch': ...}`` as the training save."""
    import torch

    net = {part: random_state(keys) for part, keys in _golden("s2mel.json").items()}
    params = [t for sd in net.values() for t in sd.values() if t.dtype.is_floating_point]
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
             for i, p in enumerate(params)}
    optimizer = {"state": state, "param_groups": [{"lr": 1e-4, "params": list(range(len(params)))}]}
    return {"net": net, "optimizer": optimizer, "scheduler": {"last_epoch": 1}, "iters": 1, "epoch": 1}


def write_model_folder(root: Path, log: Callable[[str], None] = print) -> Path:
    """The full-size random model folder in ``root`` (written once; a marker file says it is complete)."""
    import shutil

    import torch
    from bench_bigvgan import REAL as BIGVGAN_REAL
    from reference import ref

    marker = root / MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == FORMAT_VERSION:
        return root
    root.mkdir(parents=True, exist_ok=True)
    hf = root / "hf_cache"
    for sub in (hf / "w2v-bert-2.0", hf / "bigvgan"):
        sub.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "bpe.model", "feat1.pt", "feat2.pt", "wav2vec2bert_stats.pt"):
        shutil.copyfile(ref("data", name), root / name)
    torch.manual_seed(0)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("gpt.pth", lambda: _save_torch(random_state(_golden("gpt.json")), root / "gpt.pth")),
        ("s2mel.pth", lambda: _save_torch(_s2mel_file(), root / "s2mel.pth")),
        ("w2v-BERT", lambda: _save_safetensors(random_state(_golden("w2v.json")),
                                               hf / "w2v-bert-2.0" / "model.safetensors")),
        ("semantic codec", lambda: _save_safetensors(random_state(_golden("codec.json")),
                                                     hf / "semantic_codec_model.safetensors")),
        ("CAMPPlus", lambda: _save_torch(random_state(_golden("campplus.json")), hf / "campplus_cn_common.bin")),
        ("BigVGAN", lambda: _save_torch({"generator": random_state(_golden("bigvgan.json"), _bigvgan_fill)},
                                        hf / "bigvgan" / "bigvgan_generator.pt")),
    ]
    for what, write in steps:  # one checkpoint in memory at a time
        t = time.perf_counter()
        write()
        log(f"  wrote {what} in {time.perf_counter() - t:.1f} s")
    w2v_cfg = json.loads(ref("w2vbert", "w2v-bert-2.0", "config.json").read_text(encoding="utf-8"))
    w2v_cfg.update(W2V_SIZES)
    _write_text(hf / "w2v-bert-2.0" / "config.json", json.dumps(w2v_cfg, indent=2))
    _write_text(hf / "bigvgan" / "config.json", json.dumps(BIGVGAN_REAL, indent=2))
    _write_text(marker, FORMAT_VERSION)
    return root


def warm_cache(root: Path) -> float:
    """Read every file once (16 MiB blocks) so the timed load finds it in the page cache; returns GB read."""
    total = 0
    buf = bytearray(16 << 20)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    total += n
    return total / 1e9


# ----------------------------------------------------------------------------------------------- the child


def _status_mb() -> dict[str, float]:
    """VmHWM / VmRSS / RssAnon / RssFile of this process in MB (Linux)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _held_tensors(pipeline: Any) -> list[Any]:
    """Every distinct parameter/buffer tensor (by data pointer) of the loaded stages."""
    seen: dict[tuple[int, int], Any] = {}
    for name in ("semantic", "codec", "campplus", "gpt", "s2mel", "vocoder"):
        module = getattr(pipeline, name, None)
        if module is None:
            continue
        for t in (*module.parameters(), *module.buffers()):
            if t.device.type != "meta" and t.numel():
                seen.setdefault((t.data_ptr(), t.nbytes), t)
    return list(seen.values())


def child(model_dir: Path, device: str, threads: int, touch: bool) -> None:
    """What main.py does before the first word: import the engine, load the folder; report as one JSON line."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from core.api import Progress
    from core.engine import Engine

    marks: list[tuple[str, float]] = []

    def on_progress(p: Progress) -> None:
        marks.append((p.stage, time.perf_counter()))

    t_import = time.perf_counter()
    base = _status_mb()
    engine = Engine(cache_dir=tempfile.mkdtemp(prefix="bench-load-cache-"))
    engine.load(model_dir, device=device, on_progress=on_progress)
    t_ready = time.perf_counter()
    at_ready = _status_mb()
    stages = {m.removeprefix("Loading "): b - a for (m, a), (_, b) in zip(marks, marks[1:])}
    held = _held_tensors(engine.pipeline)
    report: dict[str, Any] = {
        "import_s": t_import - t_start, "load_s": t_ready - t_import, "stages": stages,
        "weights_mb": sum(t.nbytes for t in held) / 2**20, "base": base, "ready": at_ready,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if touch:  # read every weight once, as the first synthesis does
        t = time.perf_counter()
        with torch.no_grad():
            for tensor in held:
                tensor.float().sum() if tensor.is_floating_point() else tensor.sum()
        report["touch_s"] = time.perf_counter() - t
        report["touched"] = _status_mb()
        report["peak_rss_touched_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH_LOAD " + json.dumps(report), flush=True)


# ---------------------------------------------------------------------------------------------- the parent


def run_child(model_dir: Path, device: str, threads: int, touch: bool) -> tuple[float, dict[str, Any]]:
    """(seconds from spawn to the child's report, the report) of one fresh process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(model_dir), "--device", device,
           "--threads", str(threads)] + ([] if touch else ["--no-touch"])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    report: dict[str, Any] | None = None
    spawn_to_ready = 0.0
    for line in proc.stdout:
        if line.startswith("BENCH_LOAD "):
            data = json.loads(line[len("BENCH_LOAD "):])
            # the child's own clock starts after the interpreter is up; the parent's includes that start
            spawn_to_ready = time.perf_counter() - t0 - data.get("touch_s", 0.0)
            report = data
    if proc.wait() != 0 or report is None:
        raise SystemExit(f"the load process failed (exit {proc.returncode})")
    return spawn_to_ready, report


def _mb(d: Mapping[str, float], key: str) -> str:
    return f"{d[key]:.0f}" if key in d else "?"


def print_report(ready_s: float, r: Mapping[str, Any]) -> None:
    print(f"  imports {r['import_s']:.2f} s; load stages:")
    for stage, seconds in r["stages"].items():
        print(f"    {stage:18s} {seconds:6.2f} s")
    ready, base = r["ready"], r["base"]
    print(f"  weights held by the loaded models: {r['weights_mb']:.0f} MB")
    print(f"  RSS before load {_mb(base, 'VmRSS')} MB; at ready {_mb(ready, 'VmRSS')} MB "
          f"(anonymous {_mb(ready, 'RssAnon')}, file-backed {_mb(ready, 'RssFile')})")
    if "touched" in r:
        t = r["touched"]
        print(f"  after reading every weight once ({r['touch_s']:.1f} s): RSS {_mb(t, 'VmRSS')} MB "
              f"(anonymous {_mb(t, 'RssAnon')}, file-backed {_mb(t, 'RssFile')}), "
              f"peak {r['peak_rss_touched_mb']:.0f} MB")
    print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ready in {ready_s:.2f} s (load {r['load_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where the random model folder is (kept)")
    parser.add_argument("--repeat", type=int, default=1, help="timed fresh processes (the best is printed last)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-touch", action="store_true", help="do not read every weight after the load")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.device, args.threads, not args.no_touch)
        return
    root = (args.dir or default_dir()).expanduser()
    print(f"model folder {root} (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    write_model_folder(root)
    t = time.perf_counter()
    gb = warm_cache(root)
    print(f"  disk cache warmed: {gb:.2f} GB read in {time.perf_counter() - t:.1f} s")
    runs = [run_child(root, args.device, args.threads, not args.no_touch) for _ in range(max(1, args.repeat))]
    for i, (ready_s, report) in enumerate(sorted(runs, key=lambda x: -x[0])):
        print(f"run {i + 1} of {len(runs)}" + (" (best)" if i == len(runs) - 1 else ""))
        print_report(ready_s, report)


if __name__ == "__main__":
    main()
