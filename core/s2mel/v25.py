"""The IndexTTS-2.5 s2mel path: the 2.0 length regulator and CFM, without ``gpt_layer``, with ``duration_factor``.

What changes against 2.0 (``S2Mel``):

* the prompt condition is regulated from the speaker's CONTINUOUS normalised w2v-BERT features (2.0: quantised);
* the target is ``codec.decode(codes)`` alone (no GPT latent, so ``gpt_layer`` is neither needed nor loaded,
  although the released ``s2mel.pth`` still carries it);
* the target length is ``int(frames * 1.72 * duration_factor)`` in Python doubles on the decoded frames (two per
  25 Hz code), :func:`target_length`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoints import CheckpointError, load_strict, skeleton
from core.config import S2MelConfig
from core.s2mel.cfm import CFM
from core.s2mel.length_regulator import InterpolateRegulator
from core.s2mel.loader import read_s2mel_net
from core.s2mel.model import part_state

log = logging.getLogger(__name__)

MEL_FRAMES_PER_FRAME = 1.72  # mel frames (22050 / 256 per s) per semantic feature frame (50 per s), upstream's constant
DURATION_RANGE = (0.5, 2.0)  # upstream's WebUI slider; the formula itself takes any positive factor


def target_length(feature_frames: int, duration_factor: float = 1.0) -> int:
    """Mel frames for ``feature_frames`` decoded codec frames: upstream's double expression, left to right,
    truncated (``frames * (1.72 * df)`` or float32 give a different integer for some inputs)."""
    if not duration_factor > 0:
        raise ValueError(f"duration_factor must be > 0, got {duration_factor!r}")
    return int(feature_frames * MEL_FRAMES_PER_FRAME * duration_factor)


class S2MelV25(nn.Module):
    """``cfm`` and ``length_regulator`` under the names of ``s2mel.pth``'s ``net`` parts."""

    PARTS = ("cfm", "length_regulator")

    def __init__(self, cfg: S2MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cfm = CFM(cfg)
        self.length_regulator = InterpolateRegulator(cfg.length_regulator)

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: S2MelConfig, device: str | torch.device = "cpu") -> S2MelV25:
        """Load the two parts of ``s2mel.pth`` strictly (keys a part's module lacks are skipped and logged, as
        for 2.0); every other part (``gpt_layer``) is ignored."""
        net = read_s2mel_net(path)
        missing = [p for p in cls.PARTS if p not in net]
        if missing:
            raise CheckpointError(
                f"s2mel checkpoint {path} lacks net[{', '.join(repr(m) for m in missing)}] (has {sorted(net)})"
            )
        with skeleton():  # weightless until the load adopts the file's tensors
            model = cls(cfg)
        for part in cls.PARTS:
            module = getattr(model, part)
            load_strict(module, part_state(net, part, module, source=path), source=path,
                        what=f"s2mel checkpoint net['{part}']", assign=True)
        ignored = sorted(set(net) - set(cls.PARTS))
        log.info("IndexTTS-2.5 s2mel loaded from %s (not used: %s)", path, ", ".join(ignored) or "nothing")
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.length_regulator.mask_token.device

    @torch.inference_mode()
    def prompt_condition(self, spk_cond_emb: Tensor, ref_mel_frames: int) -> Tensor:
        """The speaker's normalised w2v-BERT features [1, T, 1024] regulated to the reference mel's frames."""
        return self.length_regulator(spk_cond_emb.to(self.device), ref_mel_frames)

    @torch.inference_mode()
    def target_condition(self, s_infer: Tensor, duration_factor: float = 1.0) -> Tensor:
        """Decoded codec features [1, 2n, 1024] regulated to :func:`target_length` frames."""
        return self.length_regulator(s_infer.to(self.device), target_length(s_infer.shape[1], duration_factor))

    def mel(
        self, prompt_condition: Tensor, cond: Tensor, ref_mel: Tensor, style: Tensor, steps: int = 25,
        cfg_rate: float = 0.7, noise: Tensor | None = None, generator: torch.Generator | None = None,
        cancel: threading.Event | None = None, on_step: Callable[[int, int], None] | None = None, fast: bool = False,
    ) -> Tensor:
        """CFM over ``[prompt_condition | cond]`` with the reference mel as prompt; returns the new frames only."""
        mu = torch.cat([prompt_condition, cond], dim=1)
        frames = torch.tensor([mu.shape[1]], device=mu.device)
        out = self.cfm.inference(mu, frames, ref_mel, style, steps=steps, cfg_rate=cfg_rate, noise=noise,
                                 generator=generator, cancel=cancel, on_step=on_step, fast=fast)
        return out[:, :, ref_mel.shape[-1]:]
