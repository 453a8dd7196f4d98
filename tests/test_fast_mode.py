"""Opt-in fast mode of the s2mel CFM (reduced-precision DiT): close to exact mode on the s2mel goldens, exact mode
untouched by it, and the setting reaches the sampler from the CLI and the engine."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable

import pytest
import torch
from gui_helpers import close_studio, make_studio, pump
from reference import ref
from safetensors.torch import load_file
from tiny_models import single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import GenerationSettings, SynthesisRequest
from core.cli import _settings, build_parser
from core.config import load_config
from core.engine import Engine
from core.s2mel import S2Mel
from core.s2mel.cfm import fast_dtype

META = json.loads(ref("s2mel", "s2mel_goldens.json").read_text(encoding="utf-8"))
CFM_STEPS = sorted(int(m.group(1)) for n in META["tensors"] if (m := re.fullmatch(r"cfm(\d+)\.out", n)))
# Loose by design: bfloat16 keeps ~3 significant digits. Measured on the tiny goldens: mean abs 3e-3 to 5e-3,
# max abs < 0.025, correlation > 0.9999.
FAST_MEAN_ABS = 0.05
FAST_MIN_CORR = 0.99
ATOL_CFM = 5e-4  # README: cfm<steps>.out


@pytest.fixture(scope="module")
def g() -> dict[str, torch.Tensor]:
    return load_file(str(ref("s2mel", "s2mel_goldens.safetensors")))


@pytest.fixture(scope="module")
def model() -> S2Mel:
    return S2Mel.from_checkpoint(ref("s2mel", "s2mel.pth"), load_config(ref("s2mel", "config.yaml")).require("s2mel"))


def _run(model: S2Mel, g: dict[str, torch.Tensor], steps: int, **kw: object) -> torch.Tensor:
    return model.cfm.inference(
        g["cat_condition"], g["dit.in.x_lens"], g["in.ref_mel"], g["in.style"], steps=steps,
        cfg_rate=META["inference_cfg_rate"], noise=g["cfm.noise_z"], **kw,
    )


def test_fast_dtype() -> None:
    assert fast_dtype(torch.device("cpu")) == torch.bfloat16
    assert fast_dtype(torch.device("cuda")) == torch.float16


@pytest.mark.parametrize("steps", CFM_STEPS)
def test_fast_close_to_exact_golden(model: S2Mel, g: dict[str, torch.Tensor], steps: int) -> None:
    want = g[f"cfm{steps}.out"].double()
    tp = g["in.ref_mel"].shape[-1]
    calls: list[torch.dtype] = []
    est = model.cfm.reduced_estimator(torch.bfloat16)  # cached: the copy fast mode will use
    velocity = est.velocity

    def recording(x: torch.Tensor, t: torch.Tensor, ctx: object, start: int = 0) -> torch.Tensor:
        v = velocity(x, t, ctx, start)
        calls.append(v.dtype)
        return v

    est.velocity = recording  # type: ignore[method-assign]
    try:
        got = _run(model, g, steps, fast=True)
    finally:
        del est.velocity
    assert calls == [torch.bfloat16] * steps, "fast mode must run the estimator in bfloat16 on CPU"
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got[..., :tp], torch.zeros_like(got[..., :tp]))
    diff = (got.double() - want).abs()[..., tp:]
    mean_abs = diff.mean().item()
    corr = torch.corrcoef(torch.stack([got[..., tp:].flatten().double(), want[..., tp:].flatten()]))[0, 1].item()
    assert 0 < diff.max().item(), "fast mode gave the exact result: it did not run in reduced precision"
    assert mean_abs < FAST_MEAN_ABS, f"fast mode mean abs difference {mean_abs:.4f} >= {FAST_MEAN_ABS}"
    assert corr > FAST_MIN_CORR, f"fast mode correlation with exact {corr:.5f} <= {FAST_MIN_CORR}"


def _sampler_before_fast_mode(model: S2Mel, g: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """The sampler loop exactly as it was before fast mode existed (same ops, same order)."""
    est, rate = model.cfm.estimator, META["inference_cfg_rate"]
    mu, prompt, style = g["cat_condition"], g["in.ref_mel"], g["in.style"]
    tp = prompt.shape[-1]
    x = g["cfm.noise_z"].clone()
    x[..., :tp] = 0
    prompt_x = torch.zeros_like(x)
    prompt_x[..., :tp] = prompt
    ctx = est.condition(
        torch.cat([prompt_x, torch.zeros_like(prompt_x)]), torch.cat([style, torch.zeros_like(style)]),
        torch.cat([mu, torch.zeros_like(mu)]), g["dit.in.x_lens"],
    )
    t_span = torch.linspace(0, 1, steps + 1, dtype=torch.float32)
    t = t_span[0]
    for step in range(1, steps + 1):
        dt = t_span[step] - t_span[step - 1]
        v_cond, v_uncond = est.velocity(torch.cat([x, x]), t.expand(2), ctx, tp).chunk(2, dim=0)
        x[..., tp:] += dt * ((1.0 + rate) * v_cond - rate * v_uncond)
        t = t + dt
        x[..., :tp] = 0
    return x


@pytest.mark.parametrize("steps", CFM_STEPS)
def test_exact_mode_unchanged(model: S2Mel, g: dict[str, torch.Tensor], steps: int) -> None:
    default = _run(model, g, steps)
    exact = _run(model, g, steps, fast=False)
    with torch.inference_mode():
        before = _sampler_before_fast_mode(model, g, steps)
    assert torch.equal(default, exact) and torch.equal(exact, before)
    err = (exact.double() - g[f"cfm{steps}.out"].double()).abs().max().item()
    assert err <= ATOL_CFM, f"exact mode: max abs error {err:.3g} > {ATOL_CFM}"


def test_cli_fast_flag() -> None:
    base = ["synth", "--text", "hi", "--voice", "v.wav", "--out", "o.wav"]
    assert _settings(build_parser().parse_args(base)).fast is False
    settings = _settings(build_parser().parse_args([*base, "--fast"]))
    assert settings.fast is True
    assert GenerationSettings.from_dict(settings.to_dict()) == settings
    assert GenerationSettings.from_dict({}).fast is False  # settings saved before fast mode existed


def test_engine_passes_fast_to_sampler(tmp_path, single_thread: None) -> None:  # noqa: F811 - fixture
    engine = Engine(cache_dir=tmp_path / "voice_cache")
    engine.load(tiny_model_dir(), device="cpu")
    clip = write_clip(tmp_path / "voice.wav", 1.2, 170.0, seed=3)
    cfm = engine.pipeline.s2mel.cfm
    inference: Callable[..., torch.Tensor] = cfm.inference
    seen: list[bool] = []

    def spy(*args: object, **kw: object) -> torch.Tensor:
        seen.append(bool(kw.get("fast")))
        return inference(*args, **kw)

    cfm.inference = spy  # type: ignore[method-assign]
    audio = {}
    try:
        for fast in (False, True):
            settings = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=0,
                                          fast=fast)
            request = SynthesisRequest("Hello there.", clip, settings=settings)
            audio[fast] = engine.synthesize(request, cancel=threading.Event()).audio
    finally:
        del cfm.inference
    assert seen and seen == sorted(seen) and seen[0] is False and seen[-1] is True
    assert audio[True].shape == audio[False].shape and abs(audio[True]).max() > 0


def test_gui_fast_checkbox_saved_restored_and_sent(display, audio_server, tmp_path) -> None:  # noqa: F811
    home = tmp_path / "home"
    s1 = make_studio(home)
    try:
        assert s1.app.advanced.get_settings().fast is False
        s1.app.advanced.fast.set(True)
        s1.app.text_panel.set_text("Fast please.")
        s1.app.voice_panel.set_clip(s1.voice)
        pump(s1.root, 0.2)
        s1.generate_and_wait()
        assert s1.app.engine.calls[-1]["settings"]["fast"] is True
    finally:
        close_studio(s1)
    s2 = make_studio(home)
    try:
        assert s2.app.advanced.get_settings().fast is True
        s2.app.advanced.reset()
        assert s2.app.advanced.get_settings() == GenerationSettings() and s2.app.advanced.fast.get() is False
    finally:
        close_studio(s2)


def test_reduced_estimator_cached_and_follows_weights(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    cfm = model.cfm
    keys = set(cfm.state_dict())
    first = cfm.reduced_estimator(torch.bfloat16)
    assert set(cfm.state_dict()) == keys, "the fast-mode copy must not add checkpoint keys"
    assert cfm.reduced_estimator(torch.bfloat16) is first
    assert first.transformer.layers[0].attention.wqkv.weight.dtype == torch.bfloat16
    assert first.t_embedder.mlp[0].weight.dtype == torch.float32
    state = {k: v.clone() for k, v in cfm.estimator.state_dict().items()}
    try:
        with torch.no_grad():
            cfm.estimator.conv2.bias.add_(1.0)
        rebuilt = cfm.reduced_estimator(torch.bfloat16)
        assert rebuilt is not first
        assert torch.equal(rebuilt.conv2.bias, cfm.estimator.conv2.bias.to(torch.bfloat16))
    finally:
        cfm.estimator.load_state_dict(state)
    assert torch.equal(_run(model, g, CFM_STEPS[0]), _sampler_before_fast_mode(model, g, CFM_STEPS[0]))
