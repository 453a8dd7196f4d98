"""The s2mel.pth loader: extra ``net`` keys skipped and logged (as upstream), missing/misshaped keys refused by
name, and legacy (non-zip) torch files read with ``torch.load(weights_only=True)``.

Every checkpoint here is the tiny reference ``s2mel/s2mel.pth`` (a real training save: net + optimizer, scheduler,
iters, epoch), edited and saved again.
"""

from __future__ import annotations

import argparse
import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reference import ref

from core.checkpoints import CheckpointError
from core.config import S2MelConfig, load_config
from core.s2mel import S2Mel


@pytest.fixture(scope="module")
def cfg() -> S2MelConfig:
    return load_config(ref("s2mel", "config.yaml")).require("s2mel")


@pytest.fixture(scope="module")
def reference_weights(cfg: S2MelConfig) -> dict[str, torch.Tensor]:
    return S2Mel.from_checkpoint(ref("s2mel", "s2mel.pth"), cfg).state_dict()


def _state() -> dict:
    return torch.load(ref("s2mel", "s2mel.pth"), map_location="cpu", weights_only=True)


def _write(tmp_path: Path, edit: Callable[[dict], None], *, legacy: bool = False, name: str = "s2mel.pth") -> Path:
    state = _state()
    edit(state)
    path = tmp_path / name
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


EXTRA = {
    "gpt_layer": {"9.weight": torch.ones(3, 3)},
    "cfm": {"estimator.old_head.weight": torch.ones(2), "module.estimator.old_tail.bias": torch.ones(2)},
    # a weight-norm pair of a layer the model does not have: both stored names are reported
    "length_regulator": {"old_conv.weight_g": torch.ones(4, 1, 1), "old_conv.weight_v": torch.ones(4, 2, 3)},
}
EXTRA_NAMES = ["9.weight", "estimator.old_head.weight", "estimator.old_tail.bias", "old_conv.weight_g",
               "old_conv.weight_v"]


def _add_extra(state: dict) -> None:
    for part, extra in EXTRA.items():
        state["net"][part].update(extra)
    state["net"]["discriminator"] = {"w": torch.zeros(2)}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_extra_keys_are_skipped_and_logged(tmp_path: Path, cfg: S2MelConfig, reference_weights, caplog,
                                           legacy: bool) -> None:
    path = _write(tmp_path, _add_extra, legacy=legacy)
    with caplog.at_level(logging.WARNING, logger="core.s2mel"):
        model = S2Mel.from_checkpoint(path, cfg)
    _same_weights(model.state_dict(), reference_weights)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("core.s2mel")]
    text = "\n".join(warnings)
    for name in EXTRA_NAMES:
        assert re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text), f"{name} not logged: {warnings}"
    assert "discriminator" in text
    assert all(str(path) in w for w in warnings), warnings
    for part in EXTRA:  # each part's message names its part
        assert any(f"net['{part}']" in w for w in warnings), (part, warnings)


def test_no_warning_for_a_clean_file(cfg: S2MelConfig, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="core.s2mel"):
        S2Mel.from_checkpoint(ref("s2mel", "s2mel.pth"), cfg)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_missing_key_fails_naming_it(tmp_path: Path, cfg: S2MelConfig, legacy: bool) -> None:
    path = _write(tmp_path, lambda s: s["net"]["cfm"].pop("estimator.conv2.weight"), legacy=legacy)
    with pytest.raises(CheckpointError) as err:
        S2Mel.from_checkpoint(path, cfg)
    msg = str(err.value)
    assert "missing keys: estimator.conv2.weight" in msg and str(path) in msg and "net['cfm']" in msg
    assert "\n" not in msg
    # half of a weight-norm pair missing: the other half is named
    path = _write(tmp_path, lambda s: s["net"]["cfm"].pop("estimator.x_embedder.weight_v"), name="wn.pth")
    with pytest.raises(CheckpointError, match=r"estimator\.x_embedder\.weight_v is missing") as err:
        S2Mel.from_checkpoint(path, cfg)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_misshaped_key_fails_naming_it(tmp_path: Path, cfg: S2MelConfig, legacy: bool) -> None:
    def edit(s: dict) -> None:
        w = s["net"]["length_regulator"]["content_in_proj.weight"]
        s["net"]["length_regulator"]["content_in_proj.weight"] = w[:, :-1].clone()
        s["net"]["length_regulator"]["unused.weight"] = torch.zeros(1)  # skipping extras does not hide the error

    want = tuple(_state()["net"]["length_regulator"]["content_in_proj.weight"].shape)
    cut = (want[0], want[1] - 1)
    path = _write(tmp_path, edit, legacy=legacy)
    with pytest.raises(CheckpointError) as err:
        S2Mel.from_checkpoint(path, cfg)
    msg = str(err.value)
    assert f"wrong shapes: content_in_proj.weight (file {cut}, model {want})" in msg
    assert str(path) in msg and "net['length_regulator']" in msg


def test_legacy_file_loads_identical_weights(tmp_path: Path, cfg: S2MelConfig, reference_weights) -> None:
    path = _write(tmp_path, lambda s: None, legacy=True)
    assert not zipfile.is_zipfile(path) and path.read_bytes()[:1] == b"\x80"
    _same_weights(S2Mel.from_checkpoint(path, cfg).state_dict(), reference_weights)

    # with the DDP "module." prefix, as training scripts save it
    def prefixed(s: dict) -> None:
        s["net"]["gpt_layer"] = {f"module.{k}": v for k, v in s["net"]["gpt_layer"].items()}

    path = _write(tmp_path, prefixed, legacy=True, name="ddp.pth")
    _same_weights(S2Mel.from_checkpoint(path, cfg).state_dict(), reference_weights)


class Payload:
    """Would create ``path`` if the loader ever executed what the file references."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def test_legacy_file_is_read_with_weights_only(tmp_path: Path, cfg: S2MelConfig) -> None:
    marker = tmp_path / "executed"

    def unsafe(s: dict) -> None:
        s["args"] = argparse.Namespace(lr=1e-4)
        s["payload"] = Payload(marker)

    path = _write(tmp_path, unsafe, legacy=True)
    with pytest.raises(CheckpointError) as err:
        S2Mel.from_checkpoint(path, cfg)
    msg = str(err.value)
    assert not marker.exists(), "the loader executed code from the checkpoint"
    assert str(path) in msg and "weights_only=True" in msg and "argparse.Namespace" in msg and "\n" not in msg

    good = _write(tmp_path, lambda s: None, legacy=True, name="good.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        S2Mel.from_checkpoint(cut, cfg)
    assert str(cut) in str(err.value)
