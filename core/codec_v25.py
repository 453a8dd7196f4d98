"""IndexTTS-2.5 semantic codec (upstream ``EnhancedCodec``): 25 Hz GPT codes -> 50 Hz features for the s2mel.

``decode``: raw codebook rows -> weight-normed 1x1 ``out_project`` -> decoder (Vocos backbone + Linear) ->
every frame repeated ``downsample_scale`` times -> ``up`` conv. ``quantize`` (the training-side encoder path:
strided ``down`` conv, GELU, encoder, cosine code search) is not used by 2.5 inference; it is built only with
``encoder=True``. Otherwise :meth:`EnhancedCodec.from_file` checks those keys and shapes on the ``meta`` device
and drops them (about half the weights at the released size). Attribute names = the keys under ``model`` in
``codec.pth``; the file's other top-level entries (optimizer state) are ignored.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoints import CheckpointError, fold_weight_norm, load_strict, load_torch, skeleton
from core.config import SemanticCodecConfig
from core.semantic_codec import ResidualVQ, _backbone_and_linear

log = logging.getLogger(__name__)

_FIX = "Re-download the IndexTTS-2.5 model files or check the model folder in Settings."
ENCODER_PREFIXES = ("down.", "encoder.")


@dataclass
class EnhancedCodecConfig(SemanticCodecConfig):
    """The config's ``semantic_codec`` section plus two constructor defaults it never sets."""

    num_quantizers: int = 1
    downsample_scale: int = 2


# The released configuration (config.yaml ``semantic_codec`` of IndexTeam/IndexTTS-2.5).
RELEASED = EnhancedCodecConfig(codebook_size=8192, hidden_size=1024, codebook_dim=8, vocos_dim=384,
                               vocos_intermediate_dim=2048, vocos_num_layers=12)


class EnhancedCodec(nn.Module):
    def __init__(self, cfg: EnhancedCodecConfig, encoder: bool = False) -> None:
        super().__init__()
        if cfg.downsample_scale <= 1:
            raise ValueError(f"IndexTTS-2.5 codec needs downsample_scale > 1, got {cfg.downsample_scale}")
        self.cfg = cfg
        h = cfg.hidden_size
        if encoder:
            self.down = nn.Conv1d(h, h, kernel_size=3, stride=2, padding=1)
        self.up = nn.Conv1d(h, h, kernel_size=3, stride=1, padding=1)
        if encoder:
            self.encoder = _backbone_and_linear(cfg)
        self.decoder = _backbone_and_linear(cfg)
        self.quantizer = ResidualVQ(h, cfg.codebook_size, cfg.codebook_dim, cfg.num_quantizers)

    @classmethod
    def from_file(cls, path: str | Path, cfg: EnhancedCodecConfig, encoder: bool = False) -> EnhancedCodec:
        """Load ``codec.pth`` (``['model']``) strictly; every key, encoder included, must fit ``cfg``."""
        what = "IndexTTS-2.5 codec"
        # Upstream's training script also pickled datetime objects next to the weights (harmless values).
        data = load_torch(path, what=what, allow_globals=[datetime.datetime, datetime.timezone, datetime.timedelta])
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise CheckpointError(f"{what} {path} has no 'model' state dict (is it a 2.5 codec.pth?). {_FIX}")
        state = fold_weight_norm(data["model"], source=path, what=what)
        with skeleton():  # weightless until the load adopts the file's tensors
            model = cls(cfg, encoder=encoder)
        if not encoder:
            with torch.device("meta"):  # check the unused part key by key and shape by shape, without memory
                holder = cls(cfg, encoder=True)
            load_strict(holder, {k: v.to("meta") for k, v in state.items()}, source=path, what=what)
            state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIXES)}
        load_strict(model, state, source=path, what=what, assign=True)
        log.info("IndexTTS-2.5 codec loaded from %s", path)
        return model.eval()

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 2 or codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"codec decode expects integer codes [batch, length], got {codes.dtype} {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.codebook_size):
            raise ValueError(
                f"codec codes must lie in [0, {self.cfg.codebook_size}); got [{int(codes.min())}, {int(codes.max())}]"
                " (strip the GPT stop code first)"
            )

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, T, H] -> [B, 2T, H]: each frame repeated twice (nearest), then ``up``."""
        x = F.interpolate(x.transpose(1, 2), scale_factor=2, mode="nearest")
        return self.up(x).transpose(1, 2)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> features [B, 2T, hidden] (S_infer)."""
        self._check_codes(codes)
        quantized = self.quantizer.vq2emb(codes.long().unsqueeze(0))
        return self.upsample(self.decoder(quantized))

    @torch.inference_mode()
    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, N, hidden] -> (codes [B, ceil(N/2)], quantized [B, ceil(N/2), hidden]); needs ``encoder``."""
        if not hasattr(self, "encoder"):
            raise RuntimeError("this codec was loaded without its encoder (EnhancedCodec.from_file(encoder=True))")
        x = F.gelu(self.down(x.transpose(1, 2)))
        codes, quantized = self.quantizer(self.encoder(x).transpose(1, 2))
        return codes[0], quantized.transpose(1, 2)
