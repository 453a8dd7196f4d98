"""DiT velocity estimator of the s2mel flow-matching model.

Input per frame: the noisy mel x, the prompt mel (reference frames, zeros elsewhere), the projected content
condition and the style vector, merged by one Linear. Then a U-ViT transformer (adaptive RMS norms driven by the
flow time, interleaved-pair RoPE, SwiGLU), a long skip from x, a WaveNet head and an adaptive final layer.

The merge Linear is split into its x columns and the rest, so that everything that does not depend on x or t
(prompt, content, style) is computed once per synthesis by :meth:`DiT.condition` and reused by every
:meth:`DiT.velocity` call.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.config import S2MelConfig
from core.s2mel.length_regulator import sequence_mask
from core.s2mel.wavenet import WN

MAX_FRAMES = 16384
"""Upstream hard-codes 16384 positions (RoPE table and the ``input_pos`` buffer) whatever ``block_size`` says."""

ROPE_BASE = 10000.0
NORM_EPS = 1e-5


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


class TimestepEmbedder(nn.Module):
    """``mlp([cos(1000 t f), sin(1000 t f)])`` with 128 frequencies ``f_i = exp(-ln(1e4) i / 128)`` (cosines first)."""

    freqs: Tensor  # registered buffer [freq_dim / 2]

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        half = freq_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half))

    def forward(self, t: Tensor) -> Tensor:
        args = 1000.0 * t[:, None].float() * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x * rsqrt(mean(x^2) + eps) * weight``, the normalization always computed in float32."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x) * self.weight


class AdaptiveNorm(nn.Module):
    """``w * RMSNorm(x) + b`` with ``[w | b] = project_layer(c)`` (weight first)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = RMSNorm(dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        w, b = self.project_layer(c).chunk(2, dim=-1)
        if x.dtype != torch.float32:
            return torch.addcmul(b, w, self.norm(x))
        # same math as w * norm(x) + b with two passes over x fewer: the per-frame scale comes from one norm
        # reduction and the gains fold into the per-row w
        d = x.shape[-1]
        scale = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(d).add_(self.norm.eps))
        return torch.addcmul(b, x * scale, w * self.norm.weight)


def rope_table(n_pos: int, head_dim: int, base: float = ROPE_BASE) -> Tensor:
    """``cos + i sin`` of the angles ``pos * base^(-2j/head_dim)``: complex64 [n_pos, head_dim // 2]."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(n_pos).float(), inv)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate the interleaved pairs (2j, 2j+1) of the last dim of float ``x`` [..., D] (GPT-J style) by the complex
    ``rope`` broadcasting against [..., D/2]: pair (a, b) becomes (a cos - b sin, b cos + a sin)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rope).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor, mask: Tensor | None) -> Tensor:
        b, t, d = x.shape
        qkv = self.wqkv(x).view(b, t, 3, self.n_heads, self.head_dim)
        qk = apply_rope(qkv[:, :, :2], rope[:, None, None])  # [B, T, 2, H, D]
        q, k = (z.transpose(1, 2) for z in qk.unbind(2))  # [B, H, T, D]
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.silu(self.w1(x), inplace=True)
        return self.w2(gate.mul_(self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, uvit_skip: bool) -> None:
        super().__init__()
        self.attention = Attention(dim, n_heads)
        self.feed_forward = FeedForward(dim, ffn_hidden)
        self.ffn_norm = AdaptiveNorm(dim)
        self.attention_norm = AdaptiveNorm(dim)
        self.skip_in_linear = nn.Linear(2 * dim, dim) if uvit_skip else None

    def forward(self, x: Tensor, c: Tensor, rope: Tensor, mask: Tensor | None, skip: Tensor | None) -> Tensor:
        if skip is not None:
            assert self.skip_in_linear is not None
            x = self.skip_in_linear(torch.cat([x, skip], dim=-1))
        h = x + self.attention(self.attention_norm(x, c), rope, mask)
        return h + self.feed_forward(self.ffn_norm(h, c))


class Transformer(nn.Module):
    """U-ViT: blocks ``i < depth//2`` push their output, blocks ``i > depth//2`` pop one first (LIFO).

    The final adaptive ``norm`` is applied by the caller (:meth:`DiT.velocity`), possibly to fewer frames."""

    def __init__(self, dim: int, n_heads: int, depth: int, uvit_skip: bool) -> None:
        super().__init__()
        ffn_hidden = _find_multiple(int(2 * 4 * dim / 3), 256)
        self.layers = nn.ModuleList(TransformerBlock(dim, n_heads, ffn_hidden, uvit_skip) for _ in range(depth))
        self.norm = AdaptiveNorm(dim)
        self.skip_emit = [i for i in range(depth) if uvit_skip and i < depth // 2]
        self.skip_receive = [i for i in range(depth) if uvit_skip and i > depth // 2]

    def forward(self, x: Tensor, c: Tensor, rope: Tensor, mask: Tensor | None) -> Tensor:
        stack: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            skip = stack.pop() if i in self.skip_receive else None
            x = layer(x, c, rope, mask, skip)
            if i in self.skip_emit:
                stack.append(x)
        return x


class FinalLayer(nn.Module):
    """``LayerNorm(x; no affine, eps 1e-6) * (1 + scale) + shift`` with ``[shift | scale] = Linear(SiLU(c))``,
    then a Linear."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.hidden = hidden

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = F.layer_norm(x, (self.hidden,), eps=1e-6)
        return self.linear(x * (1 + scale[:, None]) + shift[:, None])


@dataclass
class DiTCondition:
    """The x- and t-independent part of one synthesis: reused by every diffusion step."""

    static_in: Tensor
    """[B, T, hidden]: merge-Linear contribution of prompt mel, content and style, plus its bias."""
    x_weight: Tensor
    """[hidden, in_channels]: merge-Linear columns of the noisy mel."""
    attn_mask: Tensor | None
    """[B, 1, 1, T] key mask, or None when every frame is valid."""
    frame_mask: Tensor | None
    """[B, 1, T] float mask, or None when every frame is valid."""


class DiT(nn.Module):
    """Velocity estimator ``v(x, t | prompt, content, style)``; attribute names follow ``net['cfm']['estimator.*']``."""

    input_pos: Tensor  # registered buffer [MAX_FRAMES] (stored, never used)
    rope: Tensor  # non-persistent buffer: the rotary table for MAX_FRAMES positions

    def __init__(self, cfg: S2MelConfig) -> None:
        super().__init__()
        d, w = cfg.DiT, cfg.wavenet
        unsupported = [
            name
            for name, bad in (
                ("time_as_token", d.time_as_token),
                ("style_as_token", d.style_as_token),
                ("is_causal", d.is_causal),
                (f"final_layer_type={d.final_layer_type!r}", d.final_layer_type != "wavenet"),
                ("DiT.style_condition != wavenet.style_condition", d.style_condition != w.style_condition),
            )
            if bad
        ]
        if unsupported:
            raise ValueError(f"s2mel DiT options not supported: {', '.join(unsupported)}")
        if d.hidden_dim % d.num_heads or (d.hidden_dim // d.num_heads) % 2:
            raise ValueError(f"s2mel DiT hidden_dim {d.hidden_dim} must split into {d.num_heads} heads of even size")
        hidden = d.hidden_dim
        self.in_channels = d.in_channels
        self.style_dim = cfg.style_encoder.dim if d.style_condition else 0
        self.long_skip = d.long_skip_connection

        self.transformer = Transformer(hidden, d.num_heads, d.depth, d.uvit_skip_connection)
        self.x_embedder = nn.Linear(d.in_channels, hidden)  # stored, never used
        self.cond_embedder = nn.Embedding(d.content_codebook_size, hidden)  # stored, never used
        self.cond_projection = nn.Linear(d.content_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.register_buffer("input_pos", torch.arange(MAX_FRAMES))
        self.t_embedder2 = TimestepEmbedder(w.hidden_dim)
        self.conv1 = nn.Linear(hidden, w.hidden_dim)
        self.conv2 = nn.Conv1d(w.hidden_dim, d.in_channels, 1)
        self.wavenet = WN(w.hidden_dim, w.kernel_size, w.dilation_rate, w.num_layers, gin_channels=w.hidden_dim)
        self.final_layer = FinalLayer(w.hidden_dim, w.hidden_dim)
        self.res_projection = nn.Linear(hidden, w.hidden_dim)
        self.content_mask_embedder = nn.Embedding(1, hidden)  # stored, never used
        self.skip_linear = nn.Linear(hidden + d.in_channels, hidden)
        self.cond_x_merge_linear = nn.Linear(hidden + 2 * d.in_channels + self.style_dim, hidden)

        self.register_buffer("rope", rope_table(MAX_FRAMES, hidden // d.num_heads), persistent=False)

    @property
    def left_context(self) -> int:
        """Output frame j of :meth:`velocity` is exact when computed from frame ``j - left_context`` on."""
        return self.wavenet.left_context

    def reduced_copy(self, dtype: torch.dtype) -> DiT:
        """A copy whose per-step layers (transformer, WaveNet head, output projections) hold ``dtype`` weights, for
        :meth:`velocity` under ``torch.autocast(dtype=dtype)``. The condition projections, the time embedders and the
        RoPE table stay float32. Same result as autocast over float32 weights, without re-casting every weight on
        every call."""
        with torch.inference_mode(False), torch.no_grad():
            twin = copy.deepcopy(self)
            for module in (twin.transformer, twin.wavenet, twin.conv1, twin.conv2, twin.final_layer,
                           twin.res_projection, twin.skip_linear):
                module.to(dtype)
        return twin

    def condition(
        self, prompt_x: Tensor, style: Tensor, cond: Tensor, x_lens: Tensor | int | None = None
    ) -> DiTCondition:
        """Precompute what does not depend on x or t. ``prompt_x`` [B, 80, T], ``style`` [B, S], ``cond`` [B, T, C]."""
        b, _, t = prompt_x.shape
        if t > MAX_FRAMES:
            raise ValueError(
                f"s2mel: {t} mel frames exceed the model's maximum of {MAX_FRAMES}; use a shorter text or prompt"
            )
        if cond.shape[1] != t:
            raise ValueError(f"s2mel: content condition has {cond.shape[1]} frames, the mel has {t}")
        c = self.in_channels
        weight = self.cond_x_merge_linear.weight
        parts = [prompt_x.transpose(1, 2), self.cond_projection(cond)]
        if self.style_dim:
            parts.append(style[:, None, :].expand(b, t, self.style_dim))
        static = F.linear(torch.cat(parts, dim=-1), weight[:, c:], self.cond_x_merge_linear.bias)
        attn_mask = frame_mask = None
        if x_lens is not None:
            lens = torch.as_tensor(x_lens, device=prompt_x.device).reshape(-1).long()
            if bool((lens < t).any()):
                valid = sequence_mask(lens, t).expand(b, t)
                attn_mask = valid[:, None, None, :]
                frame_mask = valid[:, None, :].to(prompt_x.dtype)
        return DiTCondition(static, weight[:, :c].contiguous(), attn_mask, frame_mask)

    def velocity(self, x: Tensor, t: Tensor, ctx: DiTCondition, start: int = 0) -> Tensor:
        """Velocity for noisy mel ``x`` [B, 80, T] at flow times ``t`` [B] -> [B, 80, T - start].

        Frames before ``start`` still feed the transformer; the per-frame tail (final norm, long skip, WaveNet, final
        layer) runs only from ``start - left_context`` on, so outputs from ``start`` on are exact.
        """
        n = x.shape[-1]
        xt = x.transpose(1, 2)
        with torch.autocast(x.device.type, enabled=False):  # time embeddings in float32 also in fast mode
            t1 = self.t_embedder(t)
            t2 = self.t_embedder2(t)
        h = torch.baddbmm(ctx.static_in, xt, ctx.x_weight.t().expand(x.shape[0], -1, -1))
        c = t1[:, None, :]
        h = self.transformer(h, c, self.rope[:n], ctx.attn_mask)

        lo = max(0, start - self.left_context)
        h = self.transformer.norm(h[:, lo:], c)
        xt = xt[:, lo:]
        mask = ctx.frame_mask[..., lo:] if ctx.frame_mask is not None else None
        if self.long_skip:
            h = self.skip_linear(torch.cat([h, xt], dim=-1))
        y = self.conv1(h).transpose(1, 2)
        y = self.wavenet(y, mask, t2[:, :, None]).transpose(1, 2) + self.res_projection(h)
        y = self.final_layer(y, t1).transpose(1, 2)
        out = self.conv2(y)
        return out[..., start - lo :] if start > lo else out

    def forward(
        self, x: Tensor, prompt_x: Tensor, x_lens: Tensor | int | None, t: Tensor, style: Tensor, cond: Tensor
    ) -> Tensor:
        """One full estimator call (upstream signature): [B, 80, T]."""
        return self.velocity(x, t, self.condition(prompt_x, style, cond, x_lens))
