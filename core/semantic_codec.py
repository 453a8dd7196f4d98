"""MaskGCT semantic codec (amphion RepCodec) as IndexTTS-2 uses it: ``quantize`` and ``vq2emb``.

Encoder = Vocos backbone (ConvNeXt blocks) + Linear, then one factorized vector quantizer with
L2-normalised (cosine) code search in a low-dimensional space. Attribute names mirror
``semantic_codec/model.safetensors`` (``encoder.0.*``, ``encoder.1.*``, ``quantizer.quantizers.0.*``).

The released file also holds the codec's ``decoder.*`` (a second backbone, half the file). Inference never
runs it, so :meth:`SemanticCodec.from_file` checks those keys and shapes against a decoder built on the
``meta`` device (no memory) and then drops them instead of keeping ~90 MB of unused float32 weights.
"""

from __future__ import annotations

import logging
import typing
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoints import check_fits, fold_weight_norm, load_safetensors, load_strict, skeleton
from core.config import SemanticCodecConfig

log = logging.getLogger(__name__)

_LN_EPS = 1e-6


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> MLP (GELU) -> per-channel scale ``gamma``, plus the residual. [B, C, T]."""

    def __init__(self, dim: int, intermediate_dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    """[B, input_channels, T] -> [B, T, dim] (note the layout change, as upstream)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


def _backbone_and_linear(cfg: SemanticCodecConfig) -> nn.Sequential:
    return nn.Sequential(
        VocosBackbone(cfg.hidden_size, cfg.vocos_dim, cfg.vocos_intermediate_dim, cfg.vocos_num_layers),
        nn.Linear(cfg.vocos_dim, cfg.hidden_size),
    )


class FactorizedVectorQuantizer(nn.Module):
    """Project [B, D, T] to ``codebook_dim``, pick the nearest code by cosine, project the code back.

    ``in_project``/``out_project`` are weight-normed 1x1 convs in the file; the checkpoint loader folds
    ``weight_g``/``weight_v`` into plain ``weight`` (:func:`core.checkpoints.fold_weight_norm`).
    """

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.in_project: nn.Module
        self.out_project: nn.Module
        if input_dim != codebook_dim:
            self.in_project = nn.Conv1d(input_dim, codebook_dim, kernel_size=1)
            self.out_project = nn.Conv1d(codebook_dim, input_dim, kernel_size=1)
        else:
            self.in_project = nn.Identity()
            self.out_project = nn.Identity()
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def scores(self, z_e: torch.Tensor) -> torch.Tensor:
        """Minus the squared distance between L2-normalised latents [B, d, T] and codes: [B, T, codebook_size]."""
        b, d, t = z_e.shape
        e = F.normalize(z_e.transpose(1, 2).reshape(b * t, d))
        c = F.normalize(self.codebook.weight)
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        return (-dist).reshape(b, t, -1)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] (int64) of the latent z [B, D, T]."""
        return self.scores(self.in_project(z)).argmax(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> out_project(codebook rows) [B, D, T]."""
        return self.out_project(self.codebook(codes).transpose(1, 2))


class ResidualVQ(nn.Module):
    """Container matching the checkpoint's ``quantizer.quantizers.N`` layout (IndexTTS-2 uses one quantizer)."""

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int, num_quantizers: int = 1) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(
            FactorizedVectorQuantizer(input_dim, codebook_size, codebook_dim) for _ in range(num_quantizers)
        )

    @property
    def stages(self) -> list[FactorizedVectorQuantizer]:
        """The quantizers in order, typed."""
        return [typing.cast(FactorizedVectorQuantizer, q) for q in self.quantizers]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual quantization of z [B, D, T] -> (codes [N, B, T], quantized [B, D, T])."""
        residual = z
        quantized = torch.zeros_like(z)
        all_codes = []
        for quantizer in self.stages:
            codes = quantizer.encode(residual)
            q = quantizer.decode(codes)
            quantized = quantized + q
            residual = residual - q
            all_codes.append(codes)
        return torch.stack(all_codes), quantized

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, B, T] (one row per quantizer) -> summed embeddings [B, D, T]."""
        stages = self.stages
        out = stages[0].decode(codes[0])
        for quantizer, c in zip(stages[1:], codes[1:]):
            out = out + quantizer.decode(c)
        return out


class SemanticCodec(nn.Module):
    """The RepCodec pieces inference needs: ``encoder`` and ``quantizer`` (no decoder, see the module doc)."""

    def __init__(self, cfg: SemanticCodecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _backbone_and_linear(cfg)
        self.quantizer = ResidualVQ(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)

    @classmethod
    def from_file(cls, path: str | Path, cfg: SemanticCodecConfig) -> SemanticCodec:
        """Load ``semantic_codec/model.safetensors`` strictly (every key, decoder included, must fit ``cfg``)."""
        what = "Semantic codec"
        state = load_safetensors(path, what=what)  # its errors already name the file and the fix
        state = fold_weight_norm(state, source=path, what=what, release=True)
        # The unused decoder is checked key by key and shape by shape, without allocating it, then dropped.
        decoder_state = {k: v for k, v in state.items() if k.startswith("decoder.")}
        with skeleton():
            holder = nn.Module()
            holder.decoder = _backbone_and_linear(cfg)
        check_fits(holder, decoder_state, source=path, what=f"{what} (decoder part)")
        with skeleton():
            model = cls(cfg)
        load_strict(model, {k: v for k, v in state.items() if not k.startswith("decoder.")}, source=path, what=what,
                    assign=True)
        log.info("semantic codec loaded from %s", path)
        return model.eval()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features [B, T, hidden] -> pre-VQ latent [B, hidden, T]."""
        if x.dim() != 3 or x.shape[-1] != self.cfg.hidden_size:
            raise ValueError(
                f"semantic codec expects features [batch, frames, {self.cfg.hidden_size}], got {tuple(x.shape)}"
            )
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    @torch.inference_mode()
    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, T, hidden] -> (codes [B, T] int64, quantized embedding [B, T, hidden])."""
        codes, quantized = self.quantizer(self.encode(x))
        return codes[0], quantized.transpose(1, 2)

    @torch.inference_mode()
    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] -> embedding [B, hidden, L] (channels first, as upstream's ``quantizer.vq2emb``).

        Upstream calls ``quantizer.vq2emb(codes.unsqueeze(1))``, which only works for batch 1; here any batch
        works and the result for batch 1 is the same. Callers transpose to [B, L, hidden] themselves.
        """
        if codes.dim() != 2:
            raise ValueError(f"vq2emb expects codes [batch, length], got shape {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"vq2emb expects integer codes, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.codebook_size):
            raise ValueError(
                f"vq2emb codes must lie in [0, {self.cfg.codebook_size}); got range "
                f"[{int(codes.min())}, {int(codes.max())}] (strip the GPT start/stop tokens first)"
            )
        return self.quantizer.vq2emb(codes.long().unsqueeze(0))
