"""Find out, with a real operation, whether this PyTorch can use the GPU, and say so in words."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class DeviceReport:
    device: str  # "cuda" or "cpu": what generation will use with device=auto
    summary: str  # one line for the status bar
    details: str  # a few lines for the dialog

    @property
    def cuda_ok(self) -> bool:
        return self.device == "cuda"


def check_device() -> DeviceReport:
    """Import torch, run a small matrix multiply on CUDA (when present) and compare it with the CPU result."""
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError for a broken DLL
        return DeviceReport(
            "cpu", "PyTorch could not be loaded; generation is not possible.", f"import torch failed: {exc!r}"
        )
    lines = [f"PyTorch {torch.__version__}"]
    build = torch.version.cuda
    if not build:
        lines.append("This is the CPU-only build of PyTorch, so the GPU is not used.")
        return DeviceReport(
            "cpu", "CPU only: this PyTorch build has no CUDA support. Generation will be slow.", "\n".join(lines)
        )
    lines.append(f"CUDA build {build}")
    try:
        available = torch.cuda.is_available()
    except Exception as exc:
        available = False
        lines.append(f"torch.cuda.is_available() failed: {exc!r}")
    if not available:
        lines.append(
            "No usable NVIDIA GPU was found (no GPU, or the NVIDIA driver is missing or too old for this build)."
        )
        return DeviceReport(
            "cpu", f"No NVIDIA GPU usable with the CUDA {build} build; using the CPU (slow).", "\n".join(lines)
        )
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    arch_list = torch.cuda.get_arch_list()
    lines.append(f"GPU 0: {name}, compute capability {major}.{minor}, {memory:.1f} GiB")
    lines.append(f"This build has kernels for: {', '.join(arch_list) or 'unknown'}")
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(256, 256, generator=gen)
        b = torch.randn(256, 256, generator=gen)
        start = time.perf_counter()
        on_gpu = (a.cuda() @ b.cuda()).cpu()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1000
        error = float((on_gpu - a @ b).abs().max())
        if not error < 1e-2:
            raise RuntimeError(f"the GPU result differs from the CPU result by {error:.3g}")
    except Exception as exc:
        sm = f"sm_{major}{minor}"
        hint = (
            ""
            if sm in arch_list
            else f" This build has no kernels for {sm}; install a PyTorch build that supports your GPU."
        )
        lines.append(f"A test operation on the GPU failed: {exc}.{hint}")
        return DeviceReport(
            "cpu",
            f"{name} cannot run this CUDA {build} build of PyTorch; using the CPU (slow).{hint}",
            "\n".join(lines),
        )
    lines.append(f"Test matrix multiply on the GPU: OK ({ms:.1f} ms, max difference to CPU {error:.1e}).")
    return DeviceReport(
        "cuda",
        f"GPU ready: {name} (compute {major}.{minor}, {memory:.0f} GiB) works with CUDA {build}.",
        "\n".join(lines),
    )
