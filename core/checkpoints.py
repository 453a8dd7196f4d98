"""Open every checkpoint format the official IndexTTS-2 release uses, safely.

* torch zip pickles (``gpt.pth``, ``s2mel.pth``, ``campplus_cn_common.bin``, ``bigvgan_generator.pt``,
  ``feat1.pt`` ...) are read with ``torch.load(weights_only=True)`` only;
* safetensors files (semantic codec, w2v-BERT, Qwen);
* HuggingFace-style directories (``config.json`` + ``model.safetensors``).

Every failure becomes a :class:`CheckpointError` that names the file and says what to do.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def load_torch(path: str | Path, *, what: str = "Checkpoint", allow_globals: Iterable[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with a clear error for bad files.

    ``allow_globals`` are extra harmless classes/functions the file legitimately references.
    """
    path = _require_file(Path(path), what)
    try:
        with torch.serialization.safe_globals(list(allow_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} {path} contains objects that are not plain tensors and cannot be loaded safely "
            f"({str(exc).splitlines()[0]}). {_FIX}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{what} {path} is truncated or corrupt ({str(exc).splitlines()[0]}). {_FIX}") from exc


def load_safetensors(path: str | Path, *, what: str = "Checkpoint") -> dict[str, torch.Tensor]:
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


def fold_weight_norm(
    state: Mapping[str, torch.Tensor], *, source: str | Path = "checkpoint", what: str = "Checkpoint"
) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_g``/``X.weight_v`` pair by ``X.weight = g * v / ||v||``.

    The norm runs over every dim but 0 without epsilon, exactly as the old ``torch.nn.utils.weight_norm``
    (for ConvTranspose1d weights ``[in, out, k]`` that is per input channel, as upstream).
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
            continue
        out[key] = value
    return out


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str | Path, what: str = "Checkpoint",
    assign: bool = False,
) -> None:
    """``module.load_state_dict(state, strict=True)`` with a message that lists what does not fit.

    ``assign=True`` adopts the given tensors instead of copying them (for a model built on the ``meta`` device:
    big checkpoints are then never held twice nor randomly initialised first).
    """
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
    module.load_state_dict(dict(state), strict=True, assign=assign)
