"""Perceiver resampler (upstream ``indextts/gpt/perceiver.py::PerceiverResampler``, depth 2, flash off).

Learned latents attend to ``[latents; context]`` (no pre-norm), then a GEGLU feed-forward, both residual;
the output goes through an L2-normalising "RMSNorm". Attribute names mirror the checkpoint keys
(``layers.N.0`` attention, ``layers.N.1`` = Sequential(Linear, GEGLU, Linear), ``norm.gamma``).
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIM_HEAD = 64  # upstream PerceiverResampler default, not configurable in config.yaml
DEPTH = 2


class GEGLU(nn.Module):
    """``[value | gate] -> value * GELU_erf(gate)``."""

    def forward(self, x: Tensor) -> Tensor:
        value, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * value


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int = DIM_HEAD) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: Tensor, context: Tensor, key_mask: Tensor | None) -> Tensor:
        b, n, _ = latents.shape
        h = self.heads
        kv_in = torch.cat([latents, context], dim=1)
        q = self.to_q(latents)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        sim = (q @ k.transpose(-2, -1)) * self.scale
        if key_mask is not None:
            # Upstream fills with -finfo.max (not -inf), so a fully masked row would stay finite.
            sim = sim.masked_fill(~key_mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        out = sim.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class RMSNorm(nn.Module):
    """``x / max(||x||, 1e-12) * sqrt(dim) * gamma`` (L2-normalise form)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class PerceiverResampler(nn.Module):
    def __init__(
        self, dim: int, dim_context: int, num_latents: int, heads: int, ff_mult: float, depth: int = DEPTH
    ) -> None:
        super().__init__()
        self.proj_context = nn.Linear(dim_context, dim) if dim_context != dim else nn.Identity()
        self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        ff_inner = int(dim * ff_mult * 2 / 3)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    CrossAttention(dim, heads),
                    nn.Sequential(nn.Linear(dim, ff_inner * 2), GEGLU(), nn.Linear(ff_inner, dim)),
                ]
            )
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim)

    def forward(
        self, context: Tensor, frame_mask: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> Tensor:
        """``context`` [B, T, dim_context], ``frame_mask`` [B, T] (True = valid) -> [B, num_latents, dim]."""
        b = context.shape[0]
        context = self.proj_context(context)
        latents = self.latents.unsqueeze(0).expand(b, -1, -1)
        key_mask = None
        if frame_mask is not None and not bool(frame_mask.all()):
            ones = torch.ones(b, latents.shape[1], dtype=torch.bool, device=frame_mask.device)
            key_mask = torch.cat([ones, frame_mask], dim=1)
        if trace is not None:
            trace["proj_context_out"] = context
        for i, layer in enumerate(self.layers):
            pair = typing.cast(nn.ModuleList, layer)
            attn, ff = pair[0], pair[1]
            a = attn(latents, context, key_mask)
            if trace is not None:
                trace[f"layer{i}_attn_out"] = a
            latents = a + latents
            f = ff(latents)
            if trace is not None:
                trace[f"layer{i}_ff_out"] = f
            latents = f + latents
        out = self.norm(latents)
        if trace is not None:
            trace["out"] = out
        return out
