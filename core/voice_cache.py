"""Per-clip conditioning, kept in memory and on disk, keyed by the clip's content and the models' fingerprint.

A voice clip's conditioning (w2v-BERT features, CAMPPlus style, prompt mel, ...) costs seconds to compute and
depends only on the clip's bytes and the loaded models, so it is computed once. Disk entries are
``<kind>-<fingerprint>-<key>.safetensors`` written atomically; an unreadable entry is ignored, and a cache
that cannot be written never fails a synthesis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .api import EngineError
from .digest import sha256_file

log = logging.getLogger(__name__)

VOICE_KEYS = ("spk_cond_emb", "style", "ref_mel", "prompt_condition", "spk_latent")


@dataclass
class Voice:
    """Everything IndexTTS2 derives from a speaker clip; computed once per clip."""

    key: str
    spk_cond_emb: torch.Tensor  # [1, T_w, 1024] normalised w2v-BERT features
    style: torch.Tensor  # [1, 192] CAMPPlus
    ref_mel: torch.Tensor  # [1, 80, T_ref]
    prompt_condition: torch.Tensor  # [1, T_ref, C]
    spk_latent: torch.Tensor  # [1, 32, D] GPT speaker conditioning

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in VOICE_KEYS}


def clip_key(clip: str | Path, role: str = "voice") -> str:
    """The content key of a clip (the first 128 bits of its SHA-256)."""
    path = Path(clip)
    if not path.is_file():
        raise EngineError(f"{role.capitalize()} clip not found: {path}. Choose an existing audio file.")
    return sha256_file(path)[:32]


class VoiceCache:
    """``get``/``put`` tensor dicts by ``(kind, key)``: memory first, then ``folder`` (None: memory only)."""

    def __init__(self, folder: str | Path | None, fingerprint: str, device: torch.device | str = "cpu") -> None:
        self.folder = Path(folder) if folder else None
        self.fingerprint = fingerprint
        self.device = torch.device(device)
        self._memory: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def path(self, kind: str, key: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{kind}-{self.fingerprint}-{key}.safetensors"

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        entry = self._memory.get((kind, key))
        if entry is None:
            entry = self._read(kind, key)
            if entry is not None:
                entry = {k: v.to(self.device) for k, v in entry.items()}
                self._memory[(kind, key)] = entry
        return entry

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self._memory[(kind, key)] = dict(tensors)
        self._write(kind, key, tensors)

    def __len__(self) -> int:
        return len(self._memory)

    def _read(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            log.warning("ignoring unreadable voice cache %s", path)
            return None

    def _write(self, kind: str, key: str, tensors: dict[str, torch.Tensor]) -> None:
        path = self.path(kind, key)
        if path is None:
            return
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            tmp.replace(path)
        except OSError as exc:  # a cache is an optimisation: never fail a synthesis over it
            log.warning("could not write voice cache %s: %s", path, exc)
