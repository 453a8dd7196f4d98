"""Interpolating length regulator: semantic features (50 Hz) -> DiT content condition at the mel frame rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import LengthRegulatorConfig


def sequence_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``[B, max_length]`` bool, True for frames < length."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def mel_frames_for_codes(code_lens: Tensor) -> Tensor:
    """Mel frames for a number of semantic codes: ``(code_lens * 1.72)`` in float32, truncated (as upstream)."""
    return (code_lens.to(torch.float32) * 1.72).long()


class InterpolateRegulator(nn.Module):
    """``content_in_proj`` -> nearest interpolation to ``ylens`` frames -> n x [Conv1d k3, GroupNorm(1), Mish]
    -> Conv1d k1.

    Key names follow the checkpoint: ``content_in_proj``, ``model.{0,1,3,4,...}`` and the final ``model.{3n}`` conv,
    plus ``embedding`` / ``mask_token`` (stored but unused for continuous input).
    GroupNorm with one group pools over all channels and frames, so every sequence must be regulated on its own.
    """

    def __init__(self, cfg: LengthRegulatorConfig) -> None:
        super().__init__()
        unsupported = [
            name
            for name, on in (
                ("is_discrete", cfg.is_discrete),
                ("vector_quantize", cfg.vector_quantize),
                ("f0_condition", cfg.f0_condition),
                ("n_codebooks > 1", cfg.n_codebooks > 1),
                ("empty sampling_ratios", not cfg.sampling_ratios),
            )
            if on
        ]
        if unsupported:
            raise ValueError(f"s2mel length_regulator options not supported: {', '.join(unsupported)}")
        c = cfg.channels
        layers: list[nn.Module] = []
        for _ in cfg.sampling_ratios:
            layers += [nn.Conv1d(c, c, 3, 1, 1), nn.GroupNorm(1, c), nn.Mish()]
        layers.append(nn.Conv1d(c, c, 1))
        self.model = nn.Sequential(*layers)
        self.embedding = nn.Embedding(cfg.content_codebook_size, c)
        self.mask_token = nn.Parameter(torch.zeros(1, c))
        self.content_in_proj = nn.Linear(cfg.in_channels, c)

    def forward(self, x: Tensor, ylens: Tensor | int) -> Tensor:
        """``x`` [B, T_in, in_channels] -> [B, max(ylens), channels], frames past each ``ylens`` zeroed."""
        if isinstance(ylens, int):
            ylens = torch.full((x.shape[0],), ylens, dtype=torch.long, device=x.device)
        ylens = ylens.to(device=x.device, dtype=torch.long).reshape(-1)
        t_out = int(ylens.max())
        if t_out < 1:
            raise ValueError(f"length regulator: target length must be >= 1, got {ylens.tolist()}")
        h = self.content_in_proj(x).transpose(1, 2)
        h = F.interpolate(h.contiguous(), size=t_out, mode="nearest")
        out = self.model(h).transpose(1, 2)
        if bool((ylens < t_out).any()):
            out = out * sequence_mask(ylens, t_out).unsqueeze(-1).to(out.dtype)
        return out.contiguous()
