"""Emotion-vector mode of IndexTTS-2 (upstream ``infer_v2.py`` + the WebUI's ``normalize_emo_vec``).

Steps, in the order upstream applies them:

1. :func:`normalize_emo_vec` (WebUI only, applied by our GUI for hand-set sliders): bias factors per emotion,
   then scale so the sum is at most 0.8. ``infer()`` itself does not do this.
2. :func:`scale_emo_weights`: ``alpha = clamp(emo_alpha, 0, 1)``; if ``alpha != 1`` every weight becomes
   ``int(w * alpha * 10000) / 10000`` (truncation toward zero, Python doubles).
3. :meth:`EmotionMatrices.mix`: in each of the 8 emotion groups of ``feat1.pt`` (speaker matrix) pick the row most
   cosine-similar to the CAMPPlus style vector (or a random row), take the same rows of ``feat2.pt`` (emotion
   matrix) and form ``emovec_mat = sum_i w_i * row_i``.
4. :func:`blend_emovec`: ``emovec_mat + (1 - sum(w)) * emovec`` with ``emovec`` = merge_emovec(speaker, speaker, 1.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from core.api import EMO_BIAS, EMO_SUM_CAP, normalize_emo_vec, scale_emo_weights
from core.checkpoints import CheckpointError, load_torch

# The WebUI slider rule and infer_v2's alpha step are torch-free, in core.api (one copy for the GUI and the engine).
__all__ = ["EMO_BIAS", "EMO_SUM_CAP", "EmotionMatrices", "blend_emovec", "normalize_emo_vec", "scale_emo_weights"]


def blend_emovec(emovec_mat: Tensor, weight_sum: Tensor, emovec: Tensor) -> Tensor:
    """``emovec_mat + (1 - sum(w)) * emovec`` (the coefficient is negative when the weights sum above 1)."""
    emovec = emovec.to(emovec_mat.device, emovec_mat.dtype)
    return emovec_mat + (1 - weight_sum.to(emovec_mat.device)) * emovec


@dataclass
class EmotionMatrices:
    """``feat1.pt`` (speaker matrix, rows x 192) and ``feat2.pt`` (emotion matrix, rows x model_dim) in groups."""

    spk_groups: tuple[Tensor, ...]
    emo_groups: tuple[Tensor, ...]
    emo_num: tuple[int, ...]

    @classmethod
    def load(cls, feat1: str | Path, feat2: str | Path, emo_num: Sequence[int]) -> EmotionMatrices:
        spk = cls._load_matrix(feat1, "speaker emotion matrix (feat1.pt)")
        emo = cls._load_matrix(feat2, "emotion matrix (feat2.pt)")
        return cls.from_tensors(spk, emo, emo_num, sources=(str(feat1), str(feat2)))

    @classmethod
    def from_tensors(
        cls, spk: Tensor, emo: Tensor, emo_num: Sequence[int], sources: tuple[str, str] = ("feat1", "feat2")
    ) -> EmotionMatrices:
        groups = tuple(int(n) for n in emo_num)
        if any(n < 1 for n in groups):
            raise ValueError(f"emo_num must list positive group sizes, got {list(groups)}")
        rows = sum(groups)
        for matrix, source in ((spk, sources[0]), (emo, sources[1])):
            if matrix.shape[0] != rows:
                raise CheckpointError(
                    f"{source} has {matrix.shape[0]} rows but config emo_num {list(groups)} needs {rows}; "
                    "the matrix does not belong to this model's config.yaml"
                )
        sizes = list(groups)
        return cls(tuple(torch.split(spk.float(), sizes)), tuple(torch.split(emo.float(), sizes)), groups)

    @staticmethod
    def _load_matrix(path: str | Path, what: str) -> Tensor:
        obj = load_torch(path, what=what)
        if not isinstance(obj, Tensor) or obj.dim() != 2:
            shape = tuple(obj.shape) if isinstance(obj, Tensor) else type(obj).__name__
            raise CheckpointError(f"{what} {path} must hold one 2-D tensor, found {shape}")
        return obj

    @property
    def model_dim(self) -> int:
        return int(self.emo_groups[0].shape[1])

    def cosine_similarities(self, style: Tensor) -> Tensor:
        """cos(style, row) for every row of the speaker matrix, in file order [rows]."""
        query = style.float().reshape(1, -1).to(self.spk_groups[0].device)
        return torch.cat([F.cosine_similarity(query, group, dim=1) for group in self.spk_groups])

    def select(
        self, style: Tensor | None, use_random: bool = False, generator: torch.Generator | None = None
    ) -> list[int]:
        """Row index within each group: argmax cosine to ``style`` (first on ties), or uniformly random."""
        if use_random:
            return [int(torch.randint(0, n, (1,), generator=generator)) for n in self.emo_num]
        if style is None:
            raise ValueError("emotion-vector mode needs the speaker's CAMPPlus style vector (or use_random=True)")
        if style.numel() != self.spk_groups[0].shape[1]:
            raise ValueError(
                f"style vector has {style.numel()} values, the speaker matrix rows have {self.spk_groups[0].shape[1]}"
            )
        per_group = torch.split(self.cosine_similarities(style), list(self.emo_num))
        return [int(torch.argmax(similarities)) for similarities in per_group]

    def mix(
        self,
        weights: Sequence[float],
        style: Tensor | None,
        alpha: float | None = None,
        use_random: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(emovec_mat [1, model_dim], sum of weights)``; ``alpha`` applies :func:`scale_emo_weights` first."""
        values = list(weights)
        if len(values) != len(self.emo_num):
            raise ValueError(f"need {len(self.emo_num)} emotion weights, got {len(values)}")
        if alpha is not None:
            values = scale_emo_weights(values, alpha)
        weight_vector = torch.tensor(values, dtype=torch.float32, device=self.emo_groups[0].device)
        indices = self.select(style, use_random, generator)
        rows = torch.cat([group[i].unsqueeze(0) for i, group in zip(indices, self.emo_groups)], dim=0)
        emovec_mat = torch.sum(weight_vector.unsqueeze(1) * rows, dim=0).unsqueeze(0)
        return emovec_mat, torch.sum(weight_vector)
