"""BigVGAN v2 vocoder (``nvidia/bigvgan_v2_22khz_80band_256x``): log-mel ``[B, 80, T]`` -> waveform ``[B, 1, hop*T]``.

Loads the release as published: a folder with ``config.json`` and ``bigvgan_generator.pt``
(``{"generator": state_dict}``, convolutions stored as weight-norm ``weight_g``/``weight_v`` pairs, which are folded
at load time; an already folded file loads too). Module attribute names follow the checkpoint keys, so the file loads
strictly with no renaming.

Architecture (upstream ``indextts/s2mel/modules/bigvgan/bigvgan.py``):

* ``conv_pre`` Conv1d(num_mels -> C0, k7);
* per stage i: ``ups[i][0]`` ConvTranspose1d(C_i -> C_i/2, kernel K_i, stride u_i, padding (K_i-u_i)/2), then one AMP
  block per resblock kernel size, all run on the same input and averaged;
* ``activation_post`` (anti-aliased Snake/SnakeBeta), ``conv_post`` Conv1d(C_last -> 1, k7), then ``clamp(-1, 1)``
  (or ``tanh`` when ``use_tanh_at_final``).

The anti-aliased activation (``Activation1d``) upsamples x2 with a 12-tap Kaiser-windowed sinc (replicate padding),
applies Snake/SnakeBeta, and low-pass filters + decimates x2 with the same filter. Upstream does this with a padded
transposed convolution whose output is then cropped, and a stride-2 convolution. We compute exactly the same sums in
polyphase form: the even and odd output samples of the upsampler are two 6-tap filters of the input, and the stride-2
low-pass reads the even and odd phases with the odd and even taps. Nothing is computed that is later cropped away and
no interleaving is needed. On the CPU this runs over cache-sized blocks as shifted multiply-adds (see
``Activation1d``). ``Activation1d.upsample_interleaved`` gives the upsampled signal in upstream's layout.

Precision: the activation (resampling and Snake) always runs in float32, whatever the model dtype, so the sin of large
arguments and the 1/beta scale stay accurate when the convolutions run in float16 on CUDA.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoints import CheckpointError, fold_weight_norm, load_json, load_strict, load_torch, skeleton

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "bigvgan_generator.pt"
FILTER_TAPS = 12  # upstream Activation1d: up/down kernel size 12 for ratio 2
_SNAKE_EPS = 1e-9


# --------------------------------------------------------------------------------------------------- config


@dataclass
class BigVGANConfig:
    num_mels: int
    upsample_rates: list[int]
    upsample_kernel_sizes: list[int]
    upsample_initial_channel: int
    resblock_kernel_sizes: list[int]
    resblock_dilation_sizes: list[list[int]]
    resblock: str = "1"
    activation: str = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True  # upstream default when the key is absent
    use_bias_at_final: bool = True  # upstream default when the key is absent
    sampling_rate: int = 22050
    hop_size: int = 256

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | Path = "config") -> BigVGANConfig:
        required = (
            "num_mels",
            "upsample_rates",
            "upsample_kernel_sizes",
            "upsample_initial_channel",
            "resblock_kernel_sizes",
            "resblock_dilation_sizes",
        )
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"BigVGAN config {source} lacks required keys: {', '.join(missing)}")
        names = {f for f in cls.__dataclass_fields__}
        cfg = cls(**{k: v for k, v in data.items() if k in names})
        cfg.validate(source)
        return cfg

    @property
    def upsample_factor(self) -> int:
        return math.prod(self.upsample_rates)

    def validate(self, source: str | Path = "config") -> None:
        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"BigVGAN config {source}: {msg}")

        if str(self.resblock) not in ("1", "2"):
            raise bad(f"resblock must be \"1\" or \"2\", got {self.resblock!r}")
        if self.activation not in ("snake", "snakebeta"):
            raise bad(f"activation must be 'snake' or 'snakebeta', got {self.activation!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise bad("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise bad("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise bad(f"upsample kernel {k} - rate {u} must be even for an exact {u}x upsampler")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise bad(f"upsample_initial_channel {self.upsample_initial_channel} is not divisible by 2^stages")
        if self.hop_size != self.upsample_factor:
            log.warning("BigVGAN config %s: hop_size %d != product of upsample_rates %d", source, self.hop_size,
                        self.upsample_factor)


# --------------------------------------------------------------------------------------------------- activations


def kaiser_sinc_filter(cutoff: float, half_width: float, taps: int) -> Tensor:
    """The Kaiser-windowed sinc low-pass of upstream's ``kaiser_sinc_filter1d`` as ``[1, 1, taps]`` (sum 1)."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, periodic=False, beta=beta)
    if taps % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = (torch.arange(taps) - half).to(torch.float32)
    h = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (h / h.sum()).view(1, 1, taps)


def default_filter() -> Tensor:
    """The filter of every x2 resampler (cutoff 0.25, half-width 0.3, 12 taps)."""
    return kaiser_sinc_filter(0.25, 0.3, FILTER_TAPS)


class SnakeBeta(nn.Module):
    """``x + 1/(beta + 1e-9) * sin(alpha * x)^2`` per channel; Snake when ``with_beta`` is false (beta = alpha).

    With ``logscale`` the stored parameters are logarithms (``exp`` is applied), as in the v2 release.
    """

    def __init__(self, channels: int, *, logscale: bool = True, with_beta: bool = True) -> None:
        super().__init__()
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        if with_beta:
            self.beta = nn.Parameter(init.clone())
        self.logscale = logscale
        self.with_beta = with_beta

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """``(alpha, 1/(beta + eps))`` as float32 ``[C]``."""
        alpha = self.alpha.float()
        beta = self.beta.float() if self.with_beta else self.alpha.float()
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return alpha, 1.0 / (beta + _SNAKE_EPS)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` is ``[B, C, ...]``; computed in float32."""
        alpha, inv_beta = self.coefficients()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = x.float()
        return x + inv_beta.view(shape) * torch.sin(x * alpha.view(shape)).pow(2)


class UpSample1d(nn.Module):
    """x2 upsampler; holds the ``filter`` buffer of the checkpoint (``...upsample.filter``)."""

    filter: Tensor  # registered buffer: the 12-tap kaiser-sinc low-pass

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filter", default_filter())


class LowPassFilter1d(nn.Module):
    filter: Tensor  # registered buffer: the 12-tap kaiser-sinc low-pass

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filter", default_filter())


class DownSample1d(nn.Module):
    """x2 low-pass decimator; holds ``lowpass.filter`` (``...downsample.lowpass.filter``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d()


def _polyphase_up_weight(h: Tensor, channels: int) -> Tensor:
    """Depthwise conv weight ``[2C, 1, 7]`` over ``x`` replicate-padded by 3: output channel ``2c`` is the even
    upsampled phase, ``2c+1`` the odd one, both already multiplied by the upsampling ratio 2.

    Derivation (upstream: pad 5, ``2*conv_transpose1d(h, stride 2)``, crop 15 on each side): the upsampled sample
    ``2n`` is ``2*sum_i h[2i+1] x[n+2-i]`` and ``2n+1`` is ``2*sum_i h[2i] x[n+3-i]`` (i = 0..5, x clamped at the
    edges).
    """
    h = h.reshape(-1).float()
    w = h.new_zeros(2, 7)
    w[0, :6] = 2 * h.flip(0)[0::2]  # taps r=0..5 read x[n-3+r]: h[11-2r]
    w[1, 1:] = 2 * h.flip(0)[1::2]  # taps r=1..6 read x[n-3+r]: h[12-2r]
    return w.repeat(channels, 1).view(2 * channels, 1, 7)


def _polyphase_down_weight(h: Tensor, channels: int) -> Tensor:
    """Grouped conv weight ``[C, 2, 7]`` over the two upsampled phases, each padded to ``L+6`` (see ``Activation1d``).

    Upstream: replicate pad (5, 6), ``conv1d(h, stride 2)``: ``y[n] = sum_k h[k] z[2n+k-5]``; odd k read the even
    phase at ``n+(k-1)/2-2``, even k read the odd phase at ``n+k/2-3``.
    """
    h = h.reshape(-1).float()
    w = h.new_zeros(2, 7)
    w[0, 1:] = h[1::2]  # even phase, positions r = 1..6: h[2r-1]
    w[1, :6] = h[0::2]  # odd phase, positions r = 0..5: h[2r]
    return w.repeat(channels, 1).view(channels, 2, 7)


class Activation1d(nn.Module):
    """Anti-aliased activation: x2 upsample -> Snake/SnakeBeta -> x2 low-pass downsample (float32 inside).

    Two implementations of the same sums: on the CPU, cache-sized blocks of (channels x time) with the 6-tap phase
    filters applied as scaled shifted adds (about 2x faster than depthwise convolutions and a third of the memory
    traffic); elsewhere (CUDA) two grouped convolutions over the whole signal. ``use_blocks`` forces one or the other.
    """

    block_elems = 1 << 17  # CPU block size in input samples (512 KB in, ~2 MB of float32 temporaries)

    def __init__(self, channels: int, *, logscale: bool = True, with_beta: bool = True) -> None:
        super().__init__()
        self.act = SnakeBeta(channels, logscale=logscale, with_beta=with_beta)
        self.upsample = UpSample1d()
        self.downsample = DownSample1d()
        self.use_blocks: bool | None = None  # None: blocks on the CPU, convolutions elsewhere

    def forward(self, x: Tensor) -> Tensor:
        blocks = self.use_blocks if self.use_blocks is not None else x.device.type == "cpu"
        y = self._forward_blocks(x) if blocks else self._down(self._phases(x), apply_act=True)
        return y.to(x.dtype)

    # -- whole-signal convolutions (accelerators) and upstream-layout views for inspection

    def _phases(self, x: Tensor) -> Tensor:
        """The upsampled signal as ``[B, C, 2, L]`` (phase 0: even samples, phase 1: odd samples), float32."""
        b, c, n = x.shape
        w = _polyphase_up_weight(self.upsample.filter, c).to(x.device)
        u = F.conv1d(F.pad(x.float(), (3, 3), mode="replicate"), w, groups=c)
        return u.view(b, c, 2, n)

    def upsample_interleaved(self, x: Tensor) -> Tensor:
        """The x2-upsampled signal ``[B, C, 2L]`` exactly as upstream's ``UpSample1d`` returns it."""
        u = self._phases(x)
        return u.transpose(2, 3).reshape(x.shape[0], x.shape[1], 2 * x.shape[2])

    def downsample_interleaved(self, z: Tensor) -> Tensor:
        """Upstream's ``DownSample1d`` on an interleaved ``[B, C, 2L]`` signal (for inspection)."""
        b, c, n2 = z.shape
        return self._down(z.float().view(b, c, n2 // 2, 2).transpose(2, 3), apply_act=False)

    def _down(self, u: Tensor, *, apply_act: bool) -> Tensor:
        b, c, _, n = u.shape
        # Replicate padding of the interleaved signal (5 left, 6 right) seen per phase: the left pad repeats the
        # first even sample, the right pad the last odd sample. Each phase is padded by 3 on both sides.
        q = F.pad(u.reshape(b, 2 * c, n), (3, 3), mode="replicate").view(b, c, 2, n + 6)
        q[:, :, 0, n + 3 :] = q[:, :, 1, n + 2 : n + 3]
        q[:, :, 1, :3] = q[:, :, 0, 3:4]
        if apply_act:
            q = self.act(q)  # elementwise, so padding before or after it is the same
        w = _polyphase_down_weight(self.downsample.lowpass.filter, c).to(u.device)
        return F.conv1d(q.view(b, 2 * c, n + 6), w, groups=c)

    # -- CPU: blocked shifted adds

    def _forward_blocks(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        x = x.float()
        alpha, inv_beta = self.act.coefficients()
        alpha, inv_beta = alpha.to(x.device).view(1, -1, 1, 1), inv_beta.to(x.device).view(1, -1, 1, 1)
        h_up = self.upsample.filter.reshape(-1).tolist()
        h_down = self.downsample.lowpass.filter.reshape(-1).tolist()
        # phase 0 (even samples) reads x[m-3+r] with 2*h[11-2r] (r=0..5), phase 1 with 2*h[12-2r] (r=1..6)
        up = (
            [(r, 2.0 * h_up[11 - 2 * r]) for r in range(6)],
            [(r, 2.0 * h_up[12 - 2 * r]) for r in range(1, 7)],
        )
        # y[k] reads phase 0 at q[k+r] with h[2r-1] (r=1..6) and phase 1 at q[k+r] with h[2r] (r=0..5)
        down = ([(r, h_down[2 * r - 1]) for r in range(1, 7)], [(r, h_down[2 * r]) for r in range(6)])

        y = x.new_empty(b, c, n)
        steps = max(256, self.block_elems // c)
        rows = max(1, self.block_elems // min(steps, n))
        for c0 in range(0, c, rows):
            c1 = min(c, c0 + rows)
            for s in range(0, n, steps):
                e = min(n, s + steps)
                q = self._upsample_block(x[:, c0:c1], s, e, up)
                t = q * alpha[:, c0:c1]
                t.sin_()
                t.mul_(t).mul_(inv_beta[:, c0:c1]).add_(q)
                out = y[:, c0:c1, s:e]
                first = True
                for phase in (1, 0):
                    for r, coef in down[phase]:
                        src = t[:, :, phase, r : r + e - s]
                        if first:
                            torch.mul(src, coef, out=out)
                            first = False
                        else:
                            out.add_(src, alpha=coef)
        return y

    @staticmethod
    def _upsample_block(x: Tensor, s: int, e: int, up: tuple[list[tuple[int, float]], ...]) -> Tensor:
        """Both upsampled phases at positions ``s-3 .. e+2`` as ``q [B, C, 2, e-s+6]``, with the downsampler's replicate
        padding already in place where those positions fall outside ``0 .. n-1``."""
        b, c, n = x.shape
        lo, hi = max(s - 3, 0), min(e + 3, n)  # positions computable from x
        a, z = lo - 3, hi + 3  # x samples they read
        xs = x[:, :, max(a, 0) : min(z, n)]
        if a < 0 or z > n:
            xs = F.pad(xs, (max(0, -a), max(0, z - n)), mode="replicate")
        q = x.new_empty(b, c, 2, e - s + 6)
        j0, j1 = lo - (s - 3), hi - (s - 3)
        for phase in (0, 1):
            out = q[:, :, phase, j0:j1]
            (r, coef), *rest = up[phase]
            torch.mul(xs[:, :, r : r + hi - lo], coef, out=out)
            for r, coef in rest:
                out.add_(xs[:, :, r : r + hi - lo], alpha=coef)
        if j0 > 0:  # left of position 0: the first even sample
            q[:, :, :, :j0] = q[:, :, 0:1, j0 : j0 + 1]
        if j1 < e - s + 6:  # right of position n-1: the last odd sample
            q[:, :, :, j1:] = q[:, :, 1:2, j1 - 1 : j1]
        return q


# --------------------------------------------------------------------------------------------------- AMP blocks


def _padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class AMPBlock1(nn.Module):
    """Per dilation d: ``x += conv2(act(conv1_d(act(x))))`` (6 activations, each with its own parameters)."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int], cfg: BigVGANConfig) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=_padding(kernel, 1)) for _ in dilations
        )
        beta = cfg.activation == "snakebeta"
        self.activations = nn.ModuleList(
            Activation1d(channels, logscale=cfg.snake_logscale, with_beta=beta) for _ in range(2 * len(dilations))
        )

    def forward(self, x: Tensor) -> Tensor:
        for m, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            t = c1(self.activations[2 * m](x))
            t = c2(self.activations[2 * m + 1](t))
            x = x + t
        return x


class AMPBlock2(nn.Module):
    """Per dilation d: ``x += conv_d(act(x))`` (upstream's AMPBlock2 forgets to return x; we return it)."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int], cfg: BigVGANConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)) for d in dilations
        )
        beta = cfg.activation == "snakebeta"
        self.activations = nn.ModuleList(
            Activation1d(channels, logscale=cfg.snake_logscale, with_beta=beta) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x


# --------------------------------------------------------------------------------------------------- generator


def generator_state(obj: Any, *, source: str | Path, release: bool = False) -> dict[str, Tensor]:
    """The generator state dict of a loaded ``bigvgan_generator.pt`` (``{"generator": sd}`` or a bare ``sd``),
    weight norm folded (a file with weight norm already removed passes through); ``release``: see
    :func:`~core.checkpoints.fold_weight_norm`."""
    if isinstance(obj, Mapping) and "generator" in obj:
        state = obj["generator"]
    elif isinstance(obj, Mapping) and "conv_pre.bias" in obj:
        state = obj
    else:
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"BigVGAN generator {source} has no 'generator' state dict (found {found}). "
            "Use the bigvgan_generator.pt of nvidia/bigvgan_v2_22khz_80band_256x."
        )
    return fold_weight_norm(state, source=source, what="BigVGAN generator", release=release)


class BigVGAN(nn.Module):
    def __init__(self, cfg: BigVGANConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        c0 = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, c0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(c0 >> i, c0 >> (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        block = AMPBlock1 if str(cfg.resblock) == "1" else AMPBlock2
        self.resblocks = nn.ModuleList(
            block(c0 >> (i + 1), k, d, cfg)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        c_last = c0 >> len(cfg.upsample_rates)
        self.activation_post = Activation1d(
            c_last, logscale=cfg.snake_logscale, with_beta=cfg.activation == "snakebeta"
        )
        self.conv_post = nn.Conv1d(c_last, 1, 7, padding=3, bias=cfg.use_bias_at_final)

    @property
    def num_stages(self) -> int:
        return len(self.ups)

    @property
    def sampling_rate(self) -> int:
        return self.cfg.sampling_rate

    @property
    def hop_size(self) -> int:
        return self.cfg.upsample_factor

    def stage(self, i: int, x: Tensor) -> Tensor:
        """Stage i: transposed-conv upsampling, then the mean of its AMP blocks (summed in order, then divided)."""
        x = cast(nn.ModuleList, self.ups[i])[0](x)
        n = len(self.cfg.resblock_kernel_sizes)
        blocks = self.resblocks[i * n : (i + 1) * n]
        acc = blocks[0](x)
        for block in blocks[1:]:
            acc = acc + block(x)
        return acc / n

    def finish(self, x: Tensor) -> Tensor:
        """``activation_post`` and ``conv_post``, before the final clamp/tanh."""
        return self.conv_post(self.activation_post(x))

    def forward(self, mel: Tensor) -> Tensor:
        """``mel`` ``[B, num_mels, T]`` (log-mel) -> waveform ``[B, 1, hop*T]`` in [-1, 1]."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.num_mels:
            raise ValueError(f"BigVGAN expects a mel [B, {self.cfg.num_mels}, T], got {tuple(mel.shape)}")
        param = self.conv_pre.weight
        x = self.conv_pre(mel.to(device=param.device, dtype=param.dtype))
        for i in range(self.num_stages):
            x = self.stage(i, x)
        x = self.finish(x)
        return torch.tanh(x) if self.cfg.use_tanh_at_final else x.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | tuple[str | Path, str | Path],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> BigVGAN:
        """Load a release folder (``config.json`` + ``bigvgan_generator.pt``) or a ``(config, weights)`` pair."""
        if isinstance(source, (tuple, list)):
            config_path, weights_path = (Path(p) for p in source)
        else:
            folder = Path(source)
            if not folder.is_dir():
                raise CheckpointError(f"BigVGAN folder not found: {folder} (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
            config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        cfg = BigVGANConfig.from_dict(load_json(config_path, what="BigVGAN config"), source=config_path)
        with skeleton():  # no random init: every tensor comes from the file
            model = cls(cfg)
        model.load_checkpoint(weights_path, assign=True)
        model.eval()
        return model.to(device=device, dtype=dtype)

    def load_checkpoint(self, path: str | Path, *, assign: bool = False) -> None:
        """Strictly load ``bigvgan_generator.pt`` (weight norm folded); ``assign`` adopts the file's tensors
        (for a model built on the ``meta`` device) instead of copying them into the existing ones."""
        state = generator_state(load_torch(path, what="BigVGAN generator"), source=path, release=True)
        load_strict(self, state, source=path, what="BigVGAN generator", assign=assign)
        self._check_filters(path)

    def _check_filters(self, path: str | Path) -> None:
        """The resampling filters are loaded from the file (as upstream); they must be the Kaiser-sinc ones."""
        expected = default_filter()
        for name, buf in self.named_buffers():
            if not name.endswith("filter"):
                continue
            if buf.shape != expected.shape or not torch.allclose(buf.float(), expected, atol=1e-3, rtol=0):
                raise CheckpointError(
                    f"BigVGAN generator {path}: buffer {name} is not the 12-tap Kaiser-sinc resampling filter "
                    f"(max deviation {float((buf.float() - expected).abs().max()):.3g}); the file is corrupt."
                )
