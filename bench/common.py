"""What every bench needs: the released config.yaml (from the reference set), the peak RSS, and the floors (this
machine's SGEMM rate and memory bandwidth against a stage's counted FLOPs and bytes)."""

from __future__ import annotations

import functools
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from core.config import IndexTTSConfig, load_config  # noqa: E402

T = TypeVar("T")


def real_config_path() -> Path:
    """The official IndexTTS-2 ``checkpoints/config.yaml`` (shipped in the reference set's ``data/``)."""
    from reference import reference_root

    return reference_root() / "data" / "config.yaml"


def real_config() -> IndexTTSConfig:
    return load_config(real_config_path())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- floors: what this machine could do at best for a stage's FLOPs and bytes --------------------------------------


@dataclass(frozen=True)
class MachineRates:
    """This machine's achievable float32 rates at the bench's thread count, measured once per process (best of a few
    runs, so a busy shared machine lowers them less than it lowers a single reading)."""

    gflops: float
    """SGEMM, 2048 x 2048 x 2048, GFLOP/s."""
    gbps: float
    """Streaming read bandwidth (a GEMV over a 256 MiB matrix, which is what a memory-bound decode step does), GB/s."""

    def __str__(self) -> str:
        return f"SGEMM {self.gflops:.0f} GFLOP/s, memory {self.gbps:.1f} GB/s"


def best_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best of ``repeat`` timed calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@functools.cache
def machine_rates(repeat: int = 5) -> MachineRates:
    """Measure SGEMM GFLOP/s and read bandwidth with the current ``torch.get_num_threads()``."""
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    gflops = 2 * n**3 / best_seconds(lambda: a @ b, repeat) / 1e9
    w, v = torch.randn(4096, 16384), torch.randn(16384)  # 256 MiB
    gbps = w.numel() * w.element_size() / best_seconds(lambda: torch.mv(w, v), repeat) / 1e9
    return MachineRates(gflops, gbps)


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` under ``torch.utils.flop_counter.FlopCounterMode``: its result and the FLOPs of its matmuls,
    convolutions and attention (the CPU's fused attention kernel counted too, which the stock table misses)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(q: Any, k: Any, v: Any, *_: Any, out_shape: Any = None, **__: Any) -> int:
        return int(sdpa_flop_count(q, k, v))

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


def weight_bytes(module: Any) -> int:
    """Bytes of a module's parameters: what one forward pass must read at least once."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


@dataclass(frozen=True)
class Work:
    """The FLOPs and the unavoidable memory traffic of one run of a stage."""

    flops: float
    bytes: float

    def floor_seconds(self, rates: MachineRates) -> float:
        return max(self.flops / (rates.gflops * 1e9), self.bytes / (rates.gbps * 1e9))

    def bound(self, rates: MachineRates) -> str:
        return "compute" if self.flops / rates.gflops >= self.bytes / rates.gbps else "memory"


def floor_line(stage: str, seconds: float, work: Work, rates: MachineRates | None = None) -> str:
    """``stage: S s; F GFLOP, B GB -> floor X s (compute-bound); achieved/floor R x (P % of the floor's speed)``."""
    rates = rates or machine_rates()
    floor = work.floor_seconds(rates)
    return (f"{stage}: {seconds:.3f} s; {work.flops / 1e9:.1f} GFLOP, {work.bytes / 1e9:.2f} GB -> floor {floor:.3f} s "
            f"({work.bound(rates)}-bound at {rates}); achieved/floor {seconds / floor:.2f} x "
            f"({100 * floor / seconds:.0f} % of the floor's speed); load average "
            + " ".join(f"{x:.1f}" for x in os.getloadavg()))
