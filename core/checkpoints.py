"""Open every checkpoint format the official IndexTTS-2 release uses, safely and without copying.

* torch zip pickles (``gpt.pth``, ``s2mel.pth``, ``campplus_cn_common.bin``, ``bigvgan_generator.pt``,
  ``feat1.pt`` ...) are read with ``torch.load(weights_only=True)`` only;
* safetensors files (semantic codec, w2v-BERT, Qwen);
* HuggingFace-style directories (``config.json`` + ``model.safetensors``).

Every failure becomes a :class:`CheckpointError` that names the file and says what to do.

Memory mapping. Weights are not read into memory at load: ``torch.load(mmap=True)`` and safetensors' default
backend map the file, and each tensor is a view of the mapping (a legacy non-zip torch file, which cannot be mapped,
is read as before). The models are built as weightless skeletons (:func:`skeleton`: parameters on ``meta``, no random
init) and adopt those tensors (``load_state_dict(assign=True)``), so a load costs what the models touch, and pages
no model reads (w2v-BERT's layers after the one IndexTTS2 uses, the s2mel training state, the codec's decoder) are
never in memory. A weight the loaders derive from another (folded weight norm, the GPT's out-major layout) is a new
tensor, and the source's pages are handed back (:func:`release_pages`), so both are never held. The pages a model
reads come in from the disk cache on first use, or at once with :func:`prefault`; being file-backed, they can be
dropped and re-read by the OS under memory pressure instead of being swapped, and two loads of the same files (a
reload) share them.

The mapping is private (``MAP_PRIVATE``, copy-on-write, what torch's and safetensors' ``mmap`` do): a write into a
loaded tensor stays in this process and never reaches the file, and read-only files work. Changing a model file
while the app runs is safe when the file is replaced, not rewritten: a rename over it (``os.replace``, which our
downloader, huggingface_hub and ModelScope use) or a delete leaves the mapped old file alive until the models are
unloaded. Rewriting a loaded file in place (``cp new.pth gpt.pth`` truncates and rewrites it) is not supported on
Linux and macOS: the models then read the new bytes, or, past the new end of the file, the process stops (SIGBUS).
Keeping private copies of every page would rule that out but cost a copy of all weights at every start. On Windows
the OS refuses to overwrite or truncate a mapped file. Reload the models after changing their files.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import mmap
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

_FIX = "Re-download the model files (python main.py models download) or check the model folder in Settings."


class CheckpointError(RuntimeError):
    """A model file is missing, truncated, corrupt or does not fit the model."""


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path}. {_FIX}")
    if not path.is_file():
        raise CheckpointError(f"{what} is not a file: {path}. {_FIX}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): {path}. {_FIX}")
    return path


def _is_torch_zip(path: Path) -> bool:
    """A torch zip archive (the format since torch 1.6), which ``torch.load(mmap=True)`` can map."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def load_torch(
    path: str | Path, *, what: str = "Checkpoint", allow_globals: Iterable[Any] = (), mmap: bool = True
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with a clear error for bad files.

    A zip archive is memory-mapped (``mmap=True``, private copy-on-write: see the module doc): its tensors are views
    of the file, read when first used. Where mapping fails (a system or file system without it), the file is read
    instead; its errors are the ones reported. ``allow_globals`` are extra harmless classes/functions the file
    legitimately references.
    """
    path = _require_file(Path(path), what)

    def load(mapped: bool) -> Any:
        with torch.serialization.safe_globals(list(allow_globals)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)

    try:
        if mmap and _is_torch_zip(path):
            try:
                return load(True)
            except (RuntimeError, OSError, ValueError) as exc:
                log.debug("%s: memory mapping failed (%s); reading it", path, str(exc).splitlines()[0])
        return load(False)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} {path} contains objects that are not plain tensors and cannot be loaded safely "
            f"({str(exc).splitlines()[0]}). {_FIX}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({str(exc).splitlines()[0]}). {_FIX}") from exc


def load_safetensors(path: str | Path, *, what: str = "Checkpoint") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, as views of a private memory map of it (safetensors' ``mmap`` backend)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _require_file(Path(path), what)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({exc}). {_FIX}") from exc


def load_state(path: str | Path, *, what: str = "Checkpoint") -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch pickle, by suffix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, what=what)
    obj = load_torch(path, what=what)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} {path} does not hold a state dict (found {type(obj).__name__}). {_FIX}")
    return dict(obj)


def load_json(path: str | Path, *, what: str = "Config") -> dict[str, Any]:
    path = _require_file(Path(path), what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON ({exc}). {_FIX}") from exc


def load_hf_dir(directory: str | Path, *, what: str = "Model folder") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config.json, state dict)`` of an HF model directory (``model.safetensors`` or ``pytorch_model.bin``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{what} not found: {directory}. {_FIX}")
    config = load_json(directory / "config.json", what=f"{what} config")
    weights = directory / "model.safetensors"
    if not weights.exists() and (directory / "pytorch_model.bin").exists():
        weights = directory / "pytorch_model.bin"
    return config, load_state(weights, what=f"{what} weights")


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise(addr, length, advice)``, or None where there is none (Windows)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int], int], fn)


# Linux 5.14+: map a range's pages in one call instead of one fault per 4 KB page (about 5x faster in a VM)
_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None)
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)


def _advise(t: torch.Tensor, advice: int | None, *, whole_pages_only: bool) -> None:
    """``madvise`` over the memory of a CPU tensor: the pages wholly inside it, or every page it touches.

    Advice the system does not know (an older kernel) is ignored: it only ever changes speed or memory use."""
    advise = _madvise()
    if advise is None or advice is None or t.device.type != "cpu" or not t.nbytes:
        return
    page = mmap.PAGESIZE
    first, last = t.data_ptr(), t.data_ptr() + t.nbytes
    if whole_pages_only:
        start, end = -(-first // page) * page, last // page * page
    else:
        start, end = first // page * page, -(-last // page) * page
    if end > start:
        advise(start, end - start, advice)


def prefault(tensors: Iterable[torch.Tensor]) -> None:
    """Bring the pages of ``tensors`` (memory-mapped weights) into the process now, one call per tensor
    (``MADV_POPULATE_READ``), rather than one page fault per 4 KB page during the first synthesis."""
    for t in tensors:
        _advise(t, _POPULATE_READ, whole_pages_only=False)


def empty_populated(*size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.empty(size)`` with its pages already mapped (``MADV_POPULATE_WRITE``) for a tensor about to be
    filled: a fraction of the cost of faulting them in while writing."""
    t = torch.empty(*size, dtype=dtype)
    _advise(t, _POPULATE_WRITE, whole_pages_only=True)
    return t


def release_pages(t: torch.Tensor) -> None:
    """Let the OS take back the memory pages wholly inside ``t`` (``madvise(MADV_DONTNEED)``; Linux, macOS).

    For a tensor of a memory-mapped checkpoint that nothing reads again (a weight replaced by its folded or
    re-laid-out copy): its pages leave the process; they stay in the disk cache, and would come back from the file,
    unchanged, if read. Writing a copy and releasing the source costs a third of overwriting the source in place
    (copy-on-write faults). Elsewhere (anonymous memory) the pages read as zeros afterwards, so call it only on a
    tensor that is about to be dropped. Does nothing for a view sharing its storage with other tensors, off the CPU,
    or where there is no madvise.
    """
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.nbytes:
        _advise(t, getattr(mmap, "MADV_DONTNEED", None), whole_pages_only=True)


def fold_weight_norm(
    state: Mapping[str, torch.Tensor], *, source: str | Path = "checkpoint", what: str = "Checkpoint",
    release: bool = False,
) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_g``/``X.weight_v`` pair by ``X.weight = g * v / ||v||``.

    The norm runs over every dim but 0 without epsilon, exactly as the old ``torch.nn.utils.weight_norm``
    (for ConvTranspose1d weights ``[in, out, k]`` that is per input channel, as upstream).

    ``release`` (a state just loaded, whose ``weight_v`` tensors nothing reads afterwards): the pages of each
    ``weight_v`` are released once its weight is folded (:func:`release_pages`), so a memory-mapped checkpoint
    holds the folded weights only, not the folded and the raw ones.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            if key[: -len(".weight_g")] + ".weight_v" not in state:
                raise CheckpointError(f"{what} {source}: weight-norm key {key[:-2]}_v is missing next to {key}. {_FIX}")
            continue
        if key.endswith(".weight_v"):
            stem = key[: -len(".weight_v")]
            g = state.get(stem + ".weight_g")
            if g is None:
                raise CheckpointError(
                    f"{what} {source}: weight-norm key {stem}.weight_g is missing next to {key}. {_FIX}")
            out[stem + ".weight"] = torch._weight_norm(value, g, 0)
            if release:
                release_pages(value)
            continue
        out[key] = value
    return out


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str | Path, what: str = "Checkpoint",
    assign: bool = False,
) -> None:
    """``module.load_state_dict(state, strict=True)`` with a message that lists what does not fit.

    ``assign=True`` adopts the given tensors instead of copying them (for a model built as a :func:`skeleton`:
    big checkpoints are then never held twice nor randomly initialised first).
    """
    check_fits(module, state, source=source, what=what)
    module.load_state_dict(dict(state), strict=True, assign=assign)
    if assign:
        left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
        if left:  # a skeleton's tensor that is not in the checkpoint (a non-persistent buffer): a bug of ours
            raise RuntimeError(f"{what}: {', '.join(left[:5])} not loaded from {source} and still on the meta device")


def check_fits(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str | Path, what: str = "Checkpoint"
) -> None:
    """The strict key and shape check of :func:`load_strict` alone: a CheckpointError listing what does not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or extra or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", extra), ("wrong shapes", shapes)):
            if items:
                more = f" ... (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{what} {source} does not match the model ({'; '.join(parts)}). {_FIX}")


_SKIPPED_INIT = frozenset({"normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                           "xavier_uniform_", "xavier_normal_", "orthogonal_", "constant_", "ones_", "zeros_"})


class _SkeletonMode(TorchFunctionMode):
    """``torch.empty`` without a device makes a ``meta`` tensor; ``torch.nn.init`` calls and in-place random fills
    of meta tensors return at once. Everything else runs as usual, on the CPU."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        elif getattr(func, "__name__", "") in _SKIPPED_INIT:
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def skeleton() -> Iterator[None]:
    """Modules built inside hold weightless (``meta``) parameters and skip their random init: load them with
    :func:`load_strict` ``(..., assign=True)``.

    torch layers allocate every parameter with ``torch.empty`` and then initialise it; only those allocations go to
    ``meta``. Tables computed from scratch (position tables, filters, RoPE) stay real CPU tensors, so a buffer the
    checkpoint does not hold is correct as built, and no op runs on ``meta`` (the first ops there cost seconds of
    torch set-up). A small parameter made another way (``torch.zeros`` bias) is real until the load replaces it.
    Thread-local: loading in a background thread does not affect other threads.
    """
    with _SkeletonMode():
        yield

