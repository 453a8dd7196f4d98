"""The s2mel model (upstream ``MyModel(use_gpt_latent=True)``): ``gpt_layer``, ``length_regulator`` and ``cfm``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoints import CheckpointError, fold_weight_norm, load_strict, skeleton
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


def skip_unexpected(
    state: dict[str, Tensor], expected: Iterable[str], *, source: str | Path, what: str
) -> dict[str, Tensor]:
    """``state`` without the keys ``expected`` lacks (a ``X.weight_g``/``X.weight_v`` pair counts as ``X.weight``);
    the skipped keys are logged by name. Missing and misshaped keys are left for :func:`load_strict` to report."""
    expected = set(expected)

    def used(key: str) -> bool:
        if key in expected:
            return True
        for suffix in (".weight_g", ".weight_v"):
            if key.endswith(suffix) and key[: -len(suffix)] + ".weight" in expected:
                return True
        return False

    extra = sorted(k for k in state if not used(k))
    if not extra:
        return state
    more = f" ... (+{len(extra) - 20} more)" if len(extra) > 20 else ""
    log.warning("%s %s: skipped %d key(s) the model does not have: %s%s",
                what, source, len(extra), ", ".join(extra[:20]), more)
    return {k: v for k, v in state.items() if used(k)}


def part_state(
    net: Mapping[str, Mapping[str, Tensor]], part: str, module: nn.Module, *, source: str | Path,
    release: bool = False,
) -> dict[str, Tensor]:
    """``net[part]`` as ``module`` loads it: keys the module lacks skipped (and logged), weight norm folded
    (``release``: see :func:`~core.checkpoints.fold_weight_norm`)."""
    what = f"s2mel checkpoint net['{part}']"
    state = skip_unexpected(dict(net[part]), module.state_dict().keys(), source=source, what=what)
    return fold_weight_norm(state, source=source, what=what, release=release)


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
        """Load ``s2mel.pth``: only ``net`` is read; weight norm is folded.

        As upstream, keys of a ``net`` part that the model does not have are skipped (logged as a warning by
        name). Every key the model has must be present with its shape, else a :class:`CheckpointError` names it.
        """
        net = read_s2mel_net(path)  # memory-mapped: only what the model reads comes into memory
        with skeleton():
            model = cls.for_net(net, cfg, source=path)
        unused = sorted(set(net) - set(PARTS))
        if unused:
            log.warning("s2mel checkpoint %s: skipped net parts the model does not use: %s", path, ", ".join(unused))
        for part in PARTS:
            module = getattr(model, part)
            load_strict(module, part_state(net, part, module, source=path, release=True), source=path,
                        what=f"s2mel checkpoint net['{part}']", assign=True)
        widths = [model.gpt_layer[0].in_features, *(layer.out_features for layer in model.gpt_layer)]
        log.info("s2mel weights loaded from %s (gpt_layer %s)", path, " -> ".join(map(str, widths)))
        return model.to(device).eval()

    @classmethod
    def for_net(cls, net: Mapping[str, Mapping[str, Tensor]], cfg: S2MelConfig, *, source: str | Path) -> S2Mel:
        """The (unloaded) model that the ``net`` dict of an ``s2mel.pth`` fits: every part present, the
        ``gpt_layer`` widths read from its weights. Built on the current default device (``meta`` works)."""
        missing = [p for p in PARTS if p not in net]
        if missing:
            raise CheckpointError(
                f"s2mel checkpoint {source} lacks net[{', '.join(repr(m) for m in missing)}] (has {sorted(net)})"
            )
        widths = gpt_layer_widths(dict(net["gpt_layer"]), source=source)
        if widths[-1] != cfg.length_regulator.in_channels:
            raise CheckpointError(
                f"s2mel checkpoint {source}: gpt_layer outputs {widths[-1]} features but the config's "
                f"length_regulator.in_channels is {cfg.length_regulator.in_channels}"
            )
        return cls(cfg, gpt_dim=widths[0], gpt_hidden=tuple(widths[1:-1]))
