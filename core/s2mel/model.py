"""The s2mel model (upstream ``MyModel(use_gpt_latent=True)``): ``gpt_layer``, ``length_regulator`` and ``cfm``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoints import CheckpointError, fold_weight_norm, load_strict
from core.config import S2MelConfig
from core.s2mel.cfm import CFM
from core.s2mel.length_regulator import InterpolateRegulator
from core.s2mel.loader import read_s2mel_net

log = logging.getLogger(__name__)

PARTS = ("cfm", "length_regulator", "gpt_layer")


def gpt_layer(widths: list[int]) -> nn.Sequential:
    """Linear layers ``widths[0] -> widths[1] -> ...`` applied in a row, with no activation in between."""
    return nn.Sequential(*(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])))


def gpt_layer_widths(state: dict[str, Tensor], *, source: str | Path) -> list[int]:
    """Layer widths of a stored ``gpt_layer`` (its input width is the GPT's model_dim: 1280 real, 64 in tests)."""
    widths: list[int] = []
    i = 0
    while f"{i}.weight" in state:
        w = state[f"{i}.weight"]
        if w.ndim != 2 or (widths and w.shape[1] != widths[-1]):
            raise CheckpointError(
                f"s2mel checkpoint {source}: gpt_layer {i}.weight has unexpected shape {tuple(w.shape)}"
            )
        if not widths:
            widths.append(int(w.shape[1]))
        widths.append(int(w.shape[0]))
        i += 1
    if not widths:
        raise CheckpointError(f"s2mel checkpoint {source}: net['gpt_layer'] has no '0.weight'")
    return widths


class S2Mel(nn.Module):
    """Semantic features -> mel. Attribute names are the keys of ``s2mel.pth``'s ``net`` dict."""

    def __init__(self, cfg: S2MelConfig, gpt_dim: int, gpt_hidden: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        self.cfg = cfg
        self.cfm = CFM(cfg)
        self.length_regulator = InterpolateRegulator(cfg.length_regulator)
        self.gpt_layer = gpt_layer([gpt_dim, *gpt_hidden, cfg.length_regulator.in_channels])

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: S2MelConfig, device: str | torch.device = "cpu") -> S2Mel:
        """Load ``s2mel.pth`` strictly (every key present with its shape; weight norm folded); only ``net`` is read."""
        net = read_s2mel_net(path)
        missing = [p for p in PARTS if p not in net]
        if missing:
            raise CheckpointError(
                f"s2mel checkpoint {path} lacks net[{', '.join(repr(m) for m in missing)}] (has {sorted(net)})"
            )
        widths = gpt_layer_widths(net["gpt_layer"], source=path)
        if widths[-1] != cfg.length_regulator.in_channels:
            raise CheckpointError(
                f"s2mel checkpoint {path}: gpt_layer outputs {widths[-1]} features but the config's "
                f"length_regulator.in_channels is {cfg.length_regulator.in_channels}"
            )
        model = cls(cfg, gpt_dim=widths[0], gpt_hidden=tuple(widths[1:-1]))
        for part in PARTS:
            state = fold_weight_norm(net[part], source=path, what=f"s2mel checkpoint net['{part}']")
            load_strict(getattr(model, part), state, source=path, what=f"s2mel checkpoint net['{part}']")
        log.info("s2mel weights loaded from %s (gpt_layer %s)", path, " -> ".join(map(str, widths)))
        return model.to(device).eval()
