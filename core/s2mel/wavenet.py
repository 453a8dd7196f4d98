"""Non-causal WaveNet (gated dilated convs) used as the DiT's output head.

Every conv is a "SConv1d": it ignores the conventional zero padding and reflect-pads the input itself so that
the output has the input's length (``(k-1)*d`` frames in total, the larger half on the left).
Weight norm is folded into plain ``weight`` at load time; key names stay ``<name>.conv.conv.*``.
"""

from __future__ import annotations

import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _NormConv1d(nn.Module):
    """Holds the conv under the name ``conv`` (the checkpoint nests it as ``<layer>.conv.conv``)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.conv = conv


class SConv1d(nn.Module):
    """Conv1d with built-in reflect padding that keeps the length (stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = _NormConv1d(nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation))
        total = (kernel_size - 1) * dilation
        self.pad_right = total // 2
        self.pad_left = total - self.pad_right

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_left or self.pad_right:
            x = _reflect_pad(x, self.pad_left, self.pad_right)
        return self.conv.conv(x)


def _reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works when the input is not longer than the padding (zero-extends first)."""
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    out = F.pad(x, (left, right), mode="reflect")
    return out[..., : out.shape[-1] - extra] if extra else out


class WN(nn.Module):
    """Gated WaveNet: ``acts = tanh(a[:h]) * sigmoid(a[h:])`` with ``a = in_layer(x) + cond_layer(g)[slice]``."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"s2mel wavenet kernel_size must be odd, got {kernel_size}")
        self.hidden = hidden
        self.n_layers = n_layers
        self.cond_layer = SConv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            SConv1d(hidden, 2 * hidden, kernel_size, dilation=dilation_rate**i) for i in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            SConv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers)
        )

    @property
    def left_context(self) -> int:
        """Frames of left context one output frame depends on (through all layers)."""
        return sum(typing.cast(SConv1d, layer).pad_left for layer in self.in_layers)

    def forward(self, x: Tensor, mask: Tensor | None, g: Tensor) -> Tensor:
        """``x`` [B, hidden, T], ``mask`` [B, 1, T] or None (all valid), ``g`` [B, gin, 1] -> [B, hidden, T]."""
        h = self.hidden
        cond = self.cond_layer(g)
        output: Tensor | None = None
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + cond[:, 2 * h * i : 2 * h * (i + 1)]
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = x + rs[:, :h]
                if mask is not None:
                    x = x * mask
                skip = rs[:, h:]
            else:
                skip = rs
            output = skip if output is None else output + skip
        assert output is not None
        return output * mask if mask is not None else output
