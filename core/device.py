"""The one device decision: requested device -> the device and precision inference uses, checked with a real
operation and explained in words. Used by ``Engine.load``, ``main.py device``, the self-test and the GUI.

Precision: on CUDA the GPT runs in float16 unless the caller asks for float32 (``fp16=False``); everywhere
else it is float32. That default (:data:`FP16_ON_CUDA`) is the same for the GUI and the command line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .api import EngineError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu", "mps")
FP16_ON_CUDA = True  # the default precision on an NVIDIA GPU (GUI and CLI)


@dataclass(frozen=True)
class DeviceChoice:
    requested: str  # what the caller asked for: auto, cuda, cuda:N, cpu or mps
    device: str  # what inference will use: cuda[:N], mps or cpu
    fp16: bool  # half-precision GPT (only ever on CUDA)
    usable: bool  # False when the requested device cannot be used (an explicit choice that fails)
    summary: str  # one line for a status bar
    details: str  # a few lines for a dialog or the terminal

    @property
    def precision(self) -> str:
        return "float16" if self.fp16 else "float32"

    @property
    def cuda_ok(self) -> bool:
        return self.device.startswith("cuda")

    def require(self) -> DeviceChoice:
        """Self when usable, else the EngineError a load reports."""
        if not self.usable:
            raise EngineError(self.summary)
        return self


def _normalise(requested: str | None) -> str:
    want = (requested or "auto").strip().lower()
    if want in DEVICES or (want.startswith("cuda:") and want[5:].isdigit()):
        return want
    raise EngineError(f"Unknown device {requested!r}; use auto, cuda, cuda:N, cpu or mps.")


def probe(requested: str | None = "auto", fp16: bool | None = None) -> DeviceChoice:
    """Decide the device for ``requested`` and prove it with a real kernel. ``fp16=None``: the CUDA default."""
    want = _normalise(requested)
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError for a broken DLL
        log.exception("import torch failed")
        return DeviceChoice(want, "cpu", False, False, "PyTorch could not be loaded; generation is not possible.",
                            f"import torch failed: {exc!r}")
    lines = [f"PyTorch {torch.__version__} (CUDA build: {torch.version.cuda or 'none, CPU-only build'})."]
    notes: list[str] = []

    if want == "auto" or want.startswith("cuda"):
        ok, words = _check_cuda(torch, 0 if want in ("auto", "cuda") else int(want[5:]))
        lines += words
        if ok:
            device = "cuda" if want == "auto" else want
            half = FP16_ON_CUDA if fp16 is None else bool(fp16)
            name = torch.cuda.get_device_name(torch.device(device))
            precision = "float16" if half else "float32"
            return DeviceChoice(want, device, half, True, f"GPU ready: {name} ({precision}).",
                                "\n".join(lines + [f"Inference will run on this GPU in {precision}."]))
        notes.append(words[-1] if words else "No usable NVIDIA GPU.")
        if want != "auto":
            return DeviceChoice(want, "cpu", False, False,
                                f"CUDA was requested but cannot be used: {notes[-1]} Choose 'auto' or 'cpu'.",
                                "\n".join(lines))
    if want == "mps" or (want == "auto" and _mps_available(torch)):
        try:
            if not _mps_available(torch):
                raise RuntimeError("this PyTorch or this Mac has no MPS support")
            a = torch.randn(64, 64, device="mps")
            (a @ a).cpu()
            return DeviceChoice(want, "mps", False, True, "Apple GPU (MPS) ready (float32).",
                                "\n".join(lines + ["Apple GPU (MPS): test kernel ran. Inference will run on it."]))
        except (RuntimeError, AssertionError) as exc:
            lines.append(f"Apple GPU (MPS) failed a test kernel: {exc}.")
            if want == "mps":
                why = f"MPS (Apple GPU) was requested but cannot be used ({exc}). Choose 'auto' or 'cpu'."
                return DeviceChoice(want, "cpu", False, False, why, "\n".join(lines))
    a = torch.randn(64, 64)
    (a @ a).sum().item()
    threads = torch.get_num_threads()
    lines.append(f"Inference will run on the CPU ({threads} threads) in float32: this works but is slow.")
    reason = f" {notes[0]}" if notes else ""
    return DeviceChoice(want, "cpu", False, True, f"Using the CPU (slow).{reason}", "\n".join(lines))


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check_cuda(torch, index: int) -> tuple[bool, list[str]]:
    """``(usable, lines)``: the last line says why not when unusable."""
    build = torch.version.cuda
    if not build:
        return False, ["This PyTorch build has no CUDA support; install the CUDA build to use an NVIDIA GPU."]
    try:
        available = torch.cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - a broken driver raises all sorts
        return False, [f"torch.cuda.is_available() failed: {exc!r}.",
                       "The NVIDIA driver could not be queried."]
    if not available:
        why = (f"No NVIDIA GPU usable with the CUDA {build} build was found "
               "(no GPU, or the driver is missing or too old).")
        return False, [why]
    if index >= torch.cuda.device_count():
        return False, [f"There is no GPU number {index} (found {torch.cuda.device_count()})."]
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    free, total = torch.cuda.mem_get_info(index)
    arch_list = torch.cuda.get_arch_list()
    memory = f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    lines = [f"GPU {index}: {name}, compute capability {major}.{minor}, {memory}.",
             f"This build has kernels for: {', '.join(arch_list) or 'unknown'}."]
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(256, 256, generator=gen)
        b = torch.randn(256, 256, generator=gen)
        start = time.perf_counter()
        on_gpu = (a.to(f"cuda:{index}") @ b.to(f"cuda:{index}")).cpu()  # a real kernel launch and copy back
        torch.cuda.synchronize(index)
        ms = (time.perf_counter() - start) * 1000
        error = float((on_gpu - a @ b).abs().max())
        if not error < 1e-2:
            raise RuntimeError(f"the GPU result differs from the CPU result by {error:.3g}")
    except Exception as exc:  # noqa: BLE001
        sm = f"sm_{major}{minor}"
        hint = "" if sm in arch_list else f" This build has no kernels for {sm}; install a PyTorch build for your GPU."
        return False, lines + [f"{name} failed a test operation ({exc}).{hint}"]
    lines.append(f"Test matrix multiply on the GPU: OK ({ms:.1f} ms, max difference to the CPU {error:.1e}).")
    return True, lines


def device_report(device: str = "auto") -> tuple[bool, str]:
    """``(usable, explanation)`` for ``main.py device`` and the self-test."""
    choice = probe(device)
    return choice.usable, choice.details + ("" if choice.usable else "\n" + choice.summary)
