"""IndexTTS-2.5 s2mel path against <reference>/v2_5/s2mel: continuous prompt, duration factors, length table."""

from __future__ import annotations

import json
import re

import pytest
import torch
from reference import ref
from safetensors.torch import load_file
from test_s2mel import ATOL, ATOL_CFM, Capture, _close, record_cfm

from core.checkpoints import CheckpointError
from core.config import S2MelConfig, load_config
from core.s2mel.v25 import S2MelV25, target_length

META = json.loads(ref("v2_5", "s2mel", "s2mel_goldens.json").read_text(encoding="utf-8"))
TABLE = json.loads(ref("v2_5", "s2mel", "target_length_table.json").read_text(encoding="utf-8"))
CASES = {f"df{d['index']}": d for d in META["duration_factors"]}


def _s2mel_file(key: str):
    """A file of the 2.0 tree the goldens name relative to ``v2_5/s2mel``."""
    return (ref("v2_5", "s2mel") / META[key]["path"]).resolve()


@pytest.fixture(scope="module")
def g() -> dict[str, torch.Tensor]:
    return load_file(str(ref("v2_5", "s2mel", "s2mel_goldens.safetensors")))


@pytest.fixture(scope="module")
def cfg() -> S2MelConfig:
    return load_config(_s2mel_file("config")).require("s2mel")


@pytest.fixture(scope="module")
def model(cfg: S2MelConfig) -> S2MelV25:
    return S2MelV25.from_checkpoint(_s2mel_file("s2mel_pth"), cfg)


def test_the_goldens_cover_every_case(g):
    assert set(META["tensors"]) == set(g)
    assert CASES and all(f"{c}.vc_target" in g for c in CASES)
    assert META["s2mel_pth"]["gpt_layer_in_file_but_not_loaded"]


def test_gpt_layer_is_not_loaded(model: S2MelV25):
    assert not any(k.startswith("gpt_layer.") for k in model.state_dict())


def test_target_length_table():
    rows = TABLE["rows"]
    assert rows
    for frames, df, want in rows:
        assert target_length(frames, df) == want, (frames, df)
    for ex in META["target_length_mismatch_examples"]:
        assert target_length(ex["S_infer_frames"], ex["duration_factor"]) == ex["upstream_float64_left_to_right"]
    with pytest.raises(ValueError, match="duration_factor"):
        target_length(10, 0.0)


def _regulated(model: S2MelV25, x: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
    lr = model.length_regulator
    cap = Capture(lr)
    with torch.inference_mode():
        out = lr(x, frames)
    cap.close()
    got = {"content_in_proj": cap.out["content_in_proj"], "interpolated": cap.inp["model.0"][0], "out": out}
    for i in range(len(lr.model) // 3):
        got[f"block{i}"] = cap.out[f"model.{3 * i + 2}"]
    return got


def _check_family(prefix: str, got: dict[str, torch.Tensor], g: dict[str, torch.Tensor]) -> None:
    names = [n for n in g if n.startswith(prefix)]
    assert names
    for name in names:
        _close(name, got[name.removeprefix(prefix)], g[name], ATOL)


def test_prompt_condition_from_continuous_features(model: S2MelV25, g):
    frames = g["in.ref_mel"].shape[-1]
    assert frames == META["lengths"]["ref_mel_frames"]
    _check_family("lr_prompt.", _regulated(model, g["in.spk_cond_emb"], frames), g)
    _close("prompt_condition", model.prompt_condition(g["in.spk_cond_emb"], frames), g["lr_prompt.out"], ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_duration_factor(model: S2MelV25, g, case: str):
    df = CASES[case]["duration_factor"]
    s_infer = g["in.S_infer"]
    n = target_length(s_infer.shape[1], df)
    assert n == int(g[f"{case}.target_lengths"]) == CASES[case]["target_length"]
    if f"{case}.lr_target.content_in_proj" in g:
        _check_family(f"{case}.lr_target.", _regulated(model, s_infer, n), g)
    cond = model.target_condition(s_infer, df)
    _close(f"{case}.lr_target.out", cond, g[f"{case}.lr_target.out"], ATOL)
    mu = torch.cat([g["lr_prompt.out"], cond], dim=1)
    _close(f"{case}.cat_condition", mu, g[f"{case}.cat_condition"], ATOL)
    assert mu.shape[1] == CASES[case]["total_frames"]
    steps = {int(m.group(1)) for k in g if (m := re.fullmatch(rf"{case}\.cfm(\d+)\.out", k))}
    assert steps
    for n_steps in sorted(steps):
        _check_cfm(model, g, case, n_steps)
    vc = model.mel(g["lr_prompt.out"], g[f"{case}.lr_target.out"], g["in.ref_mel"], g["in.style"],
                   noise=g[f"{case}.cfm_noise_z"])
    _close(f"{case}.vc_target", vc, g[f"{case}.vc_target"], ATOL_CFM)


def _check_cfm(model: S2MelV25, g, case: str, steps: int) -> None:
    """One CFM run from the golden noise, with the x, t and estimator output of every recorded step."""
    mu = g[f"{case}.cat_condition"]
    out, calls = record_cfm(model.cfm, mu, torch.tensor([mu.shape[1]]), g["in.ref_mel"], g["in.style"], steps=steps,
                            cfg_rate=0.7, noise=g[f"{case}.cfm_noise_z"])
    prefix = f"{case}.cfm{steps}."
    _close(prefix + "out", out, g[prefix + "out"], ATOL_CFM)
    assert len(calls) == steps
    if prefix + "step_t" in g:
        _close(prefix + "step_t", torch.stack([c[1][0] for c in calls]), g[prefix + "step_t"], 1e-6)
    if prefix + "step_x" in g:
        _close(prefix + "step_x", torch.stack([c[0][0] for c in calls]), g[prefix + "step_x"], 2e-4)
    raw = g.get(prefix + "step_estimator_out")
    if raw is None and prefix + "step0_estimator_out" in g:
        raw = g[prefix + "step0_estimator_out"][None]
    for k in range(0 if raw is None else raw.shape[0]):
        assert raw is not None
        start = calls[k][3]  # the sampler computes frames from the prompt's end on
        _close(f"{prefix}estimator[{k}]", calls[k][2], raw[k][..., start:], 2e-4)


def test_missing_part_is_refused(tmp_path, cfg: S2MelConfig):
    state = torch.load(_s2mel_file("s2mel_pth"), map_location="cpu", weights_only=True)
    del state["net"]["length_regulator"]
    torch.save(state, tmp_path / "s2mel.pth")
    with pytest.raises(CheckpointError, match="length_regulator"):
        S2MelV25.from_checkpoint(tmp_path / "s2mel.pth", cfg)
