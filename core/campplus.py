"""CAM++ speaker embedding (3D-Speaker ``CAMPPlus``): 80-bin fbank [B, T, 80] -> style vector [B, 192].

IndexTTS-2 feeds it the mean-removed Kaldi fbank of the 16 kHz reference and uses the output as the
s2mel ``style``. Eval mode only (BatchNorm uses its running statistics). Attribute names mirror
``campplus_cn_common.bin`` (``head.*`` = the 2-D conv front end, ``xvector.*`` = the dense TDNN).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoints import CheckpointError, load_strict, load_torch, skeleton

log = logging.getLogger(__name__)

_SEGMENT = 100  # CAM segment pooling length (frames)
_TDNN_KERNEL = 5
_CAM_KERNEL = 3
_DILATIONS = (1, 2, 2)


@dataclass
class CAMPPlusConfig:
    """Widths of the released model (``CAMPPlus(feat_dim=80, embedding_size=192)``) by default."""

    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128
    head_channels: int = 32
    block_layers: tuple[int, int, int] = (12, 24, 16)

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor], source: str | Path = "state dict") -> CAMPPlusConfig:
        """Read every width from the weight shapes of a CAMPPlus state dict."""

        def shape(key: str) -> tuple[int, ...]:
            if key not in state:
                raise CheckpointError(f"CAMPPlus checkpoint {source} lacks {key}, needed to infer the model size")
            return tuple(state[key].shape)

        head_channels = shape("head.conv1.weight")[0]
        init_channels, head_out = shape("xvector.tdnn.linear.weight")[:2]
        if head_out % head_channels:
            raise CheckpointError(
                f"CAMPPlus checkpoint {source}: xvector.tdnn input width {head_out} is not a multiple of "
                f"the head width {head_channels}"
            )
        growth_rate = shape("xvector.block1.tdnnd1.cam_layer.linear_local.weight")[0]
        bn_channels = shape("xvector.block1.tdnnd1.linear1.weight")[0]
        if bn_channels % growth_rate:
            raise CheckpointError(
                f"CAMPPlus checkpoint {source}: bottleneck width {bn_channels} is not a multiple of "
                f"the growth rate {growth_rate}"
            )
        layers = []
        for b in (1, 2, 3):
            pattern = re.compile(rf"xvector\.block{b}\.tdnnd(\d+)\.linear1\.weight$")
            layers.append(max((int(m.group(1)) for k in state if (m := pattern.match(k))), default=0))
        return cls(
            feat_dim=8 * (head_out // head_channels),
            embedding_size=shape("xvector.dense.linear.weight")[0],
            growth_rate=growth_rate,
            bn_size=bn_channels // growth_rate,
            init_channels=init_channels,
            head_channels=head_channels,
            block_layers=(layers[0], layers[1], layers[2]),
        )


# ---------------------------------------------------------------------------------------------- head (FCM)


class BasicResBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual; ``stride`` only on the frequency axis."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """2-D conv front end: [B, F, T] -> [B, channels * F/8, T] (frequency halved three times)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(BasicResBlock(channels, channels, 2), BasicResBlock(channels, channels, 1))
        self.layer2 = nn.Sequential(BasicResBlock(channels, channels, 2), BasicResBlock(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        b, c, f, t = out.shape
        return out.reshape(b, c * f, t)


# ------------------------------------------------------------------------------------------- xvector (TDNN)


class BatchNormReLU(nn.Module):
    """``nonlinear``: BatchNorm1d then ReLU (checkpoint key ``*.batchnorm.*``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.batchnorm(x))


class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        pad = (_TDNN_KERNEL - 1) // 2
        self.linear = nn.Conv1d(in_channels, out_channels, _TDNN_KERNEL, stride=2, padding=pad, bias=False)
        self.nonlinear = BatchNormReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def segment_mean(x: torch.Tensor, seg_len: int = _SEGMENT) -> torch.Tensor:
    """Mean of each ``seg_len``-frame segment (the last one over its own frames), repeated over its frames."""
    seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
    return seg.repeat_interleave(seg_len, dim=-1)[..., : x.shape[-1]]


class CAMLayer(nn.Module):
    """Context-aware masking: a dilated conv gated by a sigmoid of global + segment context."""

    def __init__(self, bn_channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        pad = (_CAM_KERNEL - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            bn_channels, out_channels, _CAM_KERNEL, padding=pad, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + segment_mean(x)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return y * mask


class CAMDenseTDNNLayer(nn.Module):
    """BN-ReLU -> 1x1 bottleneck -> BN-ReLU -> CAM layer; returns only the new ``growth_rate`` channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_channels: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = BatchNormReLU(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = BatchNormReLU(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, growth_rate, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    """Densely connected layers ``tdnnd1..N``: each appends its output to the running channel stack."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_channels: int, dilation: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels + i * growth_rate, growth_rate, bn_channels, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = BatchNormReLU(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


def stats_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, 2C]: time mean and unbiased (N - 1) standard deviation."""
    return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class BatchNormOnly(nn.Module):
    """``nonlinear`` of the final dense layer: BatchNorm1d without affine parameters (no ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batchnorm(x)


class DenseLayer(nn.Module):
    """[B, C] -> 1x1 conv (no bias) -> non-affine BatchNorm -> [B, embedding]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = BatchNormOnly(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class XVector(nn.Module):
    """tdnn -> (block, transit) x 3 -> BN-ReLU -> stats pooling -> dense."""

    def __init__(self, cfg: CAMPPlusConfig, in_channels: int) -> None:
        super().__init__()
        self.tdnn = TDNNLayer(in_channels, cfg.init_channels)
        channels = cfg.init_channels
        bn_channels = cfg.bn_size * cfg.growth_rate
        for i, (num_layers, dilation) in enumerate(zip(cfg.block_layers, _DILATIONS), start=1):
            block = CAMDenseTDNNBlock(num_layers, channels, cfg.growth_rate, bn_channels, dilation)
            self.add_module(f"block{i}", block)
            channels += num_layers * cfg.growth_rate
            self.add_module(f"transit{i}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.out_nonlinear = BatchNormReLU(channels)
        self.dense = DenseLayer(channels * 2, cfg.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tdnn(x)
        for i in (1, 2, 3):
            x = getattr(self, f"transit{i}")(getattr(self, f"block{i}")(x))
        return self.dense(stats_pool(self.out_nonlinear(x)))


def with_batch_counters(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` with the model's own BatchNorm ``num_batches_tracked`` counters where the file has none (they play
    no part in eval mode; the release holds them, other exports drop them)."""
    state = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    return state


class CAMPPlus(nn.Module):
    def __init__(self, cfg: CAMPPlusConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CAMPPlusConfig()
        if cfg.feat_dim % 8:
            raise ValueError(f"CAMPPlus feat_dim must be a multiple of 8 (the head halves it 3 times): {cfg.feat_dim}")
        self.head = FCM(cfg.head_channels)
        self.xvector = XVector(cfg, cfg.head_channels * (cfg.feat_dim // 8))

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: CAMPPlusConfig | None = None) -> CAMPPlus:
        """Load ``campplus_cn_common.bin`` strictly; widths come from ``cfg`` or, if None, from the weights.

        The BatchNorm ``num_batches_tracked`` counters play no part in eval mode; a file without them is accepted.
        """
        what = "CAMPPlus checkpoint"
        state = load_torch(path, what=what)
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{what} {path} does not hold a flat state dict of tensors")
        state = dict(state)
        with skeleton():
            model = cls(cfg or CAMPPlusConfig.from_state(state, source=path))
        load_strict(model, with_batch_counters(state, model), source=path, what=what, assign=True)
        log.info("CAMPPlus loaded from %s (%s)", path, model.cfg)
        return model.eval()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Mean-removed fbank [B, T, feat_dim] -> embedding [B, embedding_size]."""
        if feats.dim() != 3 or feats.shape[-1] != self.cfg.feat_dim:
            raise ValueError(
                f"CAMPPlus expects fbank features [batch, frames, {self.cfg.feat_dim}], got {tuple(feats.shape)}"
            )
        if feats.shape[1] < 3:
            raise ValueError(
                f"CAMPPlus needs at least 3 fbank frames (got {feats.shape[1]}): the reference audio is too short"
            )
        return self.xvector(self.head(feats.transpose(1, 2)))
