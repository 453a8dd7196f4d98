"""Which device inference will use, checked with a real operation, explained in words."""

from __future__ import annotations

import torch


def device_report(device: str = "auto") -> tuple[bool, str]:
    """``(usable, explanation)``. Runs a small matmul on the chosen GPU; falls back to CPU with a note."""
    lines = [f"PyTorch {torch.__version__} (CUDA build: {torch.version.cuda or 'none, CPU-only build'})."]
    want = (device or "auto").lower()
    if want in ("auto", "cuda") or want.startswith("cuda"):
        if torch.version.cuda is None:
            lines.append("This PyTorch has no CUDA support; install the CUDA build to use an NVIDIA GPU.")
        elif not torch.cuda.is_available():
            lines.append("No usable NVIDIA GPU or driver was found.")
        else:
            name = torch.cuda.get_device_name(0)
            cap = torch.cuda.get_device_capability(0)
            free, total = torch.cuda.mem_get_info(0)
            try:
                a = torch.randn(256, 256, device="cuda")
                err = (a @ a).float().cpu().sum().item()  # forces a real kernel launch + copy back
                if err != err:
                    raise RuntimeError("NaN from a test matmul")
                arch = f"sm_{cap[0]}{cap[1]}"
                lines.append(f"GPU: {name} ({arch}), {free / 2**30:.1f} of {total / 2**30:.1f} GiB free. Test kernel ran: OK.")
                return True, "\n".join(lines + ["Inference will run on this GPU."])
            except RuntimeError as exc:
                lines.append(f"GPU {name} (compute capability {cap[0]}.{cap[1]}) failed a test kernel: {exc}. "
                             "This PyTorch build may not support this GPU; install a matching CUDA build.")
    if want == "mps" or (want == "auto" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        try:
            a = torch.randn(64, 64, device="mps")
            (a @ a).cpu()
            return True, "\n".join(lines + ["Apple GPU (MPS): test kernel ran. Inference will run on it."])
        except (RuntimeError, AssertionError) as exc:
            lines.append(f"Apple GPU (MPS) failed a test kernel: {exc}.")
    a = torch.randn(64, 64)
    (a @ a).sum().item()
    lines.append(f"Inference will run on the CPU ({torch.get_num_threads()} threads): this works but is slow.")
    return want in ("auto", "cpu"), "\n".join(lines)
