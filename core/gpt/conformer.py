"""WeNet-style Conformer encoder used by IndexTTS-2 for the speaker and the emotion conditioning.

Semantics (upstream ``indextts/gpt/conformer_encoder.py`` with its defaults): Conv2dSubsampling2 front end,
relative-position self attention *without* rel_shift (the positional term only depends on the key index),
pre-norm blocks without macaron feed-forward, LayerNorm + SiLU convolution module, ``norm_final`` per block and
``after_norm`` at the end. Attribute names mirror the checkpoint keys (``embed.conv.0``, ``encoders.N.self_attn`` ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PE_MAX_LEN = 5000  # rows of the stored sinusoid table (upstream RelPositionalEncoding max_len)
CONV_KERNEL = 15  # upstream cnn_module_kernel default


def sinusoid_table(length: int, dim: int) -> Tensor:
    """``pe[p, 2i] = sin(p / 10000^(2i/dim))``, ``pe[p, 2i+1] = cos(...)`` (sin and cos interleaved)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class RelPositionalEncoding(nn.Module):
    """Holds the sinusoid table (a persistent buffer in the checkpoint); scaling happens in the subsampler."""

    pe: Tensor  # registered buffer [1, max_len, dim]

    def __init__(self, dim: int, max_len: int = PE_MAX_LEN) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim).unsqueeze(0))

    def forward(self, length: int) -> Tensor:
        if length >= self.pe.shape[1]:
            raise ValueError(
                f"conditioning clip too long: {length} subsampled frames, the conformer supports fewer than "
                f"{self.pe.shape[1]}; use a shorter reference clip"
            )
        return self.pe[:, :length]


class Conv2dSubsampling2(nn.Module):
    """Conv2d(1->C, 3x3, stride 2) + ReLU over the [T, F] feature image, flatten channel-major, Linear -> C."""

    def __init__(self, input_size: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(channels * ((input_size - 1) // 2), channels))
        self.pos_enc = RelPositionalEncoding(channels)
        self.xscale = math.sqrt(channels)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.conv(x.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        pos_emb = self.pos_enc(t)
        return x * self.xscale, pos_emb, mask[:, 2::2]


class RelPositionAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.d_k = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x: Tensor, pos_emb: Tensor, key_mask: Tensor | None) -> Tensor:
        b, t, _ = x.shape
        h, d = self.heads, self.d_k
        q = self.linear_q(x).view(b, t, h, d)
        k = self.linear_k(x).view(b, t, h, d).transpose(1, 2)
        v = self.linear_v(x).view(b, t, h, d).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(pos_emb.shape[0], -1, h, d).transpose(1, 2)
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        # No rel_shift upstream: the positional score only depends on the absolute key index.
        scores = (q_u @ k.transpose(-2, -1) + q_v @ p.transpose(-2, -1)) / math.sqrt(d)
        if key_mask is not None:
            invalid = ~key_mask[:, None, None, :]
            attn = scores.masked_fill(invalid, float("-inf")).softmax(dim=-1).masked_fill(invalid, 0.0)
        else:
            attn = scores.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, h * d)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConvModule(nn.Module):
    def __init__(self, dim: int, kernel: int = CONV_KERNEL) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x.transpose(1, 2)  # [B, C, T]
        if mask is not None:
            x = x.masked_fill(~mask[:, None, :], 0.0)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = self.depthwise_conv(x)
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        x = self.pointwise_conv2(x)
        if mask is not None:
            x = x.masked_fill(~mask[:, None, :], 0.0)
        return x.transpose(1, 2)


class ConformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(dim, heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.conv_module = ConvModule(dim)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-5)
        self.norm_mha = nn.LayerNorm(dim, eps=1e-5)
        self.norm_conv = nn.LayerNorm(dim, eps=1e-5)
        self.norm_final = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor, pos_emb: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, mask)
        x = x + self.conv_module(self.norm_conv(x), mask)
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    """``[B, T, input_size]`` features -> ``([B, T', dim], valid mask [B, T'])`` with ``T' = (T - 1) // 2``."""

    def __init__(
        self, input_size: int, dim: int, heads: int, hidden: int, num_blocks: int, input_layer: str = "conv2d2"
    ) -> None:
        super().__init__()
        if input_layer != "conv2d2":
            raise ValueError(f"unsupported conformer input_layer {input_layer!r} (IndexTTS-2 uses 'conv2d2')")
        self.embed = Conv2dSubsampling2(input_size, dim)
        self.encoders = nn.ModuleList(ConformerBlock(dim, heads, hidden) for _ in range(num_blocks))
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``lengths`` [B] gives the valid frame count; frames ``t >= length`` are masked (None: all valid)."""
        t = x.shape[1]
        if lengths is None:
            mask = torch.ones(x.shape[0], t, dtype=torch.bool, device=x.device)
        else:
            mask = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        x, pos_emb, mask = self.embed(x, mask)
        pos_emb = pos_emb.to(x.dtype)
        if trace is not None:
            trace["subsample_out"] = x
            trace["pos_emb"] = pos_emb
        # An all-valid mask changes nothing; skip the masking work then (infer_v2's usual case).
        block_mask = None if bool(mask.all()) else mask
        for i, block in enumerate(self.encoders):
            x = block(x, pos_emb, block_mask)
            if trace is not None:
                trace[f"block{i}_out"] = x
        x = self.after_norm(x)
        if trace is not None:
            trace["encoder_out"] = x
        return x, mask
