"""s2mel (gpt_layer, length regulator, DiT, CFM) against the s2mel goldens, plus the s2mel.pth loader."""

from __future__ import annotations

import argparse
import json
import pickle
import re
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reference import ref
from safetensors.torch import load_file

from core.api import Cancelled
from core.checkpoints import CheckpointError
from core.config import S2MelConfig, load_config
from core.s2mel import S2Mel, mel_frames_for_codes
from core.s2mel.dit import DiT

ATOL = 1e-4  # README: gpt_layer, length regulator, every DiT intermediate, dit.out / dit_cfg.out
ATOL_CFM = 5e-4  # README: cfm3.*, cfm25.*, vc_targets (from cfm.noise_z)

META = json.loads(ref("s2mel", "s2mel_goldens.json").read_text(encoding="utf-8"))
NAMES = sorted(META["tensors"])
CFM_STEPS = sorted(int(m.group(1)) for n in NAMES if (m := re.fullmatch(r"cfm(\d+)\.out", n)))
LR_RUNS = {"lr_prompt": ("in.S_ref", "in.ref_target_lengths"), "lr_target": ("S_infer", "in.target_lengths")}

# Every golden tensor belongs to exactly one family below; test_every_golden_is_checked enforces it.
FAMILIES = {
    "inputs": r"in\..*|dit\.in\..*|dit_cfg\.in\..*",
    "targets": r"S_infer|cat_condition",
    "gpt_layer": r"gpt_layer\..*",
    "length_regulator": r"lr_(prompt|target)\..*",
    "dit": r"dit\.(?!in\.).*",
    "dit_cfg": r"dit_cfg\.out",
    "cfm": r"cfm(\d+)?\..*",
}


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float = ATOL) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double() - want.double()).abs().max().item()
    assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"


@pytest.fixture(scope="module")
def g() -> dict[str, torch.Tensor]:
    return load_file(str(ref("s2mel", "s2mel_goldens.safetensors")))


@pytest.fixture(scope="module")
def cfg() -> S2MelConfig:
    return load_config(ref("s2mel", "config.yaml")).require("s2mel")


@pytest.fixture(scope="module")
def model(cfg: S2MelConfig) -> S2Mel:
    return S2Mel.from_checkpoint(ref("s2mel", "s2mel.pth"), cfg)


class Capture:
    """Forward hooks on every submodule of ``root``: ``out[name]`` / ``inp[name]`` of the last call."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.out: dict[str, object] = {}
        self.inp: dict[str, tuple] = {}
        self.handles = []
        for name, mod in root.named_modules():
            self.handles.append(mod.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable:
        def hook(_mod: torch.nn.Module, args: tuple, out: object) -> None:
            self.inp[name] = args
            self.out[name] = out

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def test_every_golden_is_checked() -> None:
    assert CFM_STEPS, "no cfm<steps>.out golden"
    for name in NAMES:
        hits = [fam for fam, pat in FAMILIES.items() if re.fullmatch(pat, name)]
        assert len(hits) == 1, f"golden {name} matches families {hits}: extend the tests"


def test_widths_from_config_and_weights(model: S2Mel, cfg: S2MelConfig, g: dict[str, torch.Tensor]) -> None:
    assert model.gpt_layer[0].in_features == g["in.gpt_latent"].shape[-1]
    assert model.length_regulator.content_in_proj.out_features == cfg.length_regulator.channels
    est = model.cfm.estimator
    assert len(est.transformer.layers) == cfg.DiT.depth
    assert est.transformer.layers[0].attention.n_heads == cfg.DiT.num_heads
    assert len(est.wavenet.in_layers) == cfg.wavenet.num_layers


def test_gpt_layer(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    cap = Capture(model.gpt_layer)
    with torch.inference_mode():
        out = model.gpt_layer(g["in.gpt_latent"])
    cap.close()
    linears = [n for n in NAMES if re.fullmatch(r"gpt_layer\.linear\d+", n)]
    assert linears
    assert set(linears) | {"gpt_layer.out"} == {n for n in NAMES if n.startswith("gpt_layer.")}
    for name in linears:
        _close(name, cap.out[name.removeprefix("gpt_layer.linear")], g[name])
    _close("gpt_layer.out", out, g["gpt_layer.out"])


def test_target_lengths_and_content(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    assert torch.equal(mel_frames_for_codes(g["in.code_lens"]), g["in.target_lengths"])
    # f32 product as upstream: 25 codes -> 43 frames (f64 would give 42)
    assert mel_frames_for_codes(torch.tensor([25])).item() == 43
    with torch.inference_mode():
        s_infer = g["in.vq_emb"] + model.gpt_layer(g["in.gpt_latent"])
    _close("S_infer", s_infer, g["S_infer"])
    _close("cat_condition", torch.cat([g["lr_prompt.out"], g["lr_target.out"]], dim=1), g["cat_condition"])


@pytest.mark.parametrize("run", sorted(LR_RUNS))
def test_length_regulator(model: S2Mel, g: dict[str, torch.Tensor], run: str) -> None:
    x_name, len_name = LR_RUNS[run]
    lr = model.length_regulator
    cap = Capture(lr)
    with torch.inference_mode():
        out = lr(g[x_name], g[len_name])
    cap.close()
    names = [n for n in NAMES if n.startswith(run + ".")]
    n_convs = len(lr.model) // 3
    got: dict[str, torch.Tensor] = {
        "content_in_proj": cap.out["content_in_proj"],
        "interpolated": cap.inp["model.0"][0],
        "final_conv_BCT": cap.out[f"model.{3 * n_convs}"],
        "out": out,
        "olens": g[len_name],
    }
    for i in range(n_convs):
        got[f"block{i}"] = cap.out[f"model.{3 * i + 2}"]
    for name in names:
        _close(name, got[name.removeprefix(run + ".")], g[name])
    assert len(names) == len(got), f"{run}: goldens {names} vs checks {sorted(got)}"


def _dit_value(name: str, est: DiT, cap: Capture, g: dict[str, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Our value for golden ``dit.<name>`` from the captured module inputs/outputs of one full DiT call."""
    t = out.shape[-1]
    fixed: dict[str, Callable[[], torch.Tensor]] = {
        "t_freq_embedding": lambda: cap.inp["t_embedder.mlp"][0],
        "t1_time_embedding": lambda: cap.out["t_embedder"],
        "cond_projection": lambda: cap.out["cond_projection"],
        "x_in_concat": lambda: torch.cat(
            [
                g["dit.in.x"].transpose(1, 2),
                g["dit.in.prompt_x"].transpose(1, 2),
                cap.out["cond_projection"],
                g["dit.in.style"][:, None, :].expand(-1, t, -1),
            ],
            dim=-1,
        ),
        "input_projection": lambda: cap.inp["transformer.layers.0"][0],
        "transformer_final_norm": lambda: cap.out["transformer.norm"],
        "long_skip_linear": lambda: cap.out["skip_linear"],
        "conv1": lambda: cap.out["conv1"],
        "t2_time_embedding": lambda: cap.out["t_embedder2"],
        "wavenet.cond_layer": lambda: cap.out["wavenet.cond_layer"],
        "wavenet.out": lambda: cap.out["wavenet"],
        "res_projection": lambda: cap.out["res_projection"],
        "final_layer.adaLN_modulation": lambda: cap.out["final_layer.adaLN_modulation"],
        "final_layer": lambda: cap.out["final_layer"],
        "out": lambda: out,
        "rope_freqs_cis": lambda: torch.view_as_real(est.rope[:t]),
        "skip_layers_emit": lambda: torch.tensor(est.transformer.skip_emit),
        "skip_layers_receive": lambda: torch.tensor(est.transformer.skip_receive),
    }
    if name in fixed:
        return fixed[name]()
    if m := re.fullmatch(r"block(\d+)\.out", name):
        return cap.out[f"transformer.layers.{m.group(1)}"]
    if m := re.fullmatch(r"block(\d+)\.skip_in_concat", name):
        return cap.inp[f"transformer.layers.{m.group(1)}.skip_in_linear"][0]
    if m := re.fullmatch(r"block(\d+)\.(attention_norm|attention|ffn_norm|feed_forward|skip_in_linear)", name):
        return cap.out[f"transformer.layers.{m.group(1)}.{m.group(2)}"]
    if m := re.fullmatch(r"wavenet\.(in_layer|res_skip_layer)(\d+)", name):
        return cap.out[f"wavenet.{m.group(1)}s.{m.group(2)}"]
    raise AssertionError(f"golden dit.{name} is not mapped to a module of our DiT")


def test_dit_single_call(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    est = model.cfm.estimator
    cap = Capture(est)
    with torch.inference_mode():
        out = est(*(g[f"dit.in.{k}"] for k in ("x", "prompt_x", "x_lens", "t", "style", "cond")))
    cap.close()
    names = [n for n in NAMES if re.fullmatch(FAMILIES["dit"], n)]
    assert "dit.out" in names
    for name in names:
        got = _dit_value(name.removeprefix("dit."), est, cap, g, out)
        if g[name].dtype == torch.int64:
            assert got.tolist() == g[name].tolist(), name
        else:
            _close(name, got, g[name])


def test_dit_cfg_batch(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    est = model.cfm.estimator
    with torch.inference_mode():
        out = est(*(g[f"dit_cfg.in.{k}"] for k in ("x", "prompt_x", "x_lens", "t", "style", "cond")))
    _close("dit_cfg.out", out, g["dit_cfg.out"])


def record_cfm(cfm: torch.nn.Module, *args: object, **kwargs: object) -> tuple[torch.Tensor, list[tuple]]:
    """``cfm.inference(*args, **kwargs)`` with every estimator velocity call recorded as (x, t, v, start)."""
    est = cfm.estimator
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
    velocity = est.velocity

    def recording(x: torch.Tensor, t: torch.Tensor, ctx: object, start: int = 0) -> torch.Tensor:
        v = velocity(x, t, ctx, start)
        calls.append((x.clone(), t.clone(), v.clone(), start))
        return v

    est.velocity = recording
    try:
        out = cfm.inference(*args, **kwargs)
    finally:
        del est.velocity
    return out, calls


@pytest.mark.parametrize("steps", CFM_STEPS)
def test_cfm_inference(model: S2Mel, g: dict[str, torch.Tensor], steps: int) -> None:
    est = model.cfm.estimator
    progress: list[tuple[int, int]] = []
    out, calls = record_cfm(
        model.cfm, g["cat_condition"], g["dit.in.x_lens"], g["in.ref_mel"], g["in.style"], steps=steps,
        cfg_rate=META["inference_cfg_rate"], noise=g["cfm.noise_z"], on_step=lambda i, n: progress.append((i, n)),
    )
    tp = g["in.ref_mel"].shape[-1]
    assert progress == [(i, steps) for i in range(1, steps + 1)]
    assert len(calls) == steps
    prefix = f"cfm{steps}."
    names = [n for n in NAMES if n.startswith(prefix)]
    raw = g.get(prefix + "step_estimator_out")
    if raw is None:
        raw = g[prefix + "step0_estimator_out"][None]
    for name in names:
        key = name.removeprefix(prefix)
        if key == "out":
            _close(name, out, g[name], ATOL_CFM)
        elif key == "vc_target":
            _close(name, out[:, :, tp:], g[name], ATOL_CFM)
        elif key == "step_x":
            _close(name, torch.stack([c[0][0] for c in calls]), g[name], ATOL_CFM)
            _close(name + " (cfg rows share x)", torch.stack([c[0][1] for c in calls]), g[name], ATOL_CFM)
        elif key == "step_t":
            _close(name, torch.stack([c[1][0] for c in calls]), g[name], 1e-6)
        elif key in ("step_estimator_out", "step0_estimator_out"):
            # the sampler skips work for prompt frames: only frames from `start` on are computed
            for k in range(raw.shape[0]):
                start = calls[k][3]
                _close(f"{name}[{k}] (sampler)", calls[k][2], raw[k][..., start:], ATOL_CFM)
            # the full estimator on the golden state reproduces the raw output, prompt frames included
            with torch.inference_mode():
                x0 = g[prefix + "step_x"][0][None]
                t0 = g[prefix + "step_t"][0].reshape(1)
                full = est(
                    torch.cat([x0, x0]), g["dit_cfg.in.prompt_x"], g["dit.in.x_lens"], t0.repeat(2),
                    g["dit_cfg.in.style"], g["dit_cfg.in.cond"],
                )
            _close(f"{name}[0] (full call)", full, raw[0], ATOL_CFM)
        else:
            raise AssertionError(f"unchecked golden {name}")
    assert torch.equal(out[:, :, :tp], torch.zeros_like(out[:, :, :tp]))


def _euler_reference(est: DiT, mu, prompt, style, noise, steps: int, rate: float) -> torch.Tensor:
    """The sampler written out plainly with full estimator calls (no precomputation, no frame skipping)."""
    tp = prompt.shape[-1]
    x = noise.clone()
    x[..., :tp] = 0
    prompt_x = torch.zeros_like(x)
    prompt_x[..., :tp] = prompt
    span = torch.linspace(0, 1, steps + 1)
    t = span[0]
    lens = torch.tensor([x.shape[-1]])
    for k in range(1, steps + 1):
        dt = span[k] - span[k - 1]
        if rate > 0:
            v = est(
                torch.cat([x, x]), torch.cat([prompt_x, 0 * prompt_x]), lens, t.repeat(2),
                torch.cat([style, 0 * style]), torch.cat([mu, 0 * mu]),
            )
            v = (1 + rate) * v[:1] - rate * v[1:]
        else:
            v = est(x, prompt_x, lens, t.reshape(1), style, mu)
        x = x + dt * v
        t = t + dt
        x[..., :tp] = 0
    return x


@pytest.mark.parametrize("rate", [0.0, 0.7])
@pytest.mark.parametrize("prompt_frames", ["golden", 1])
def test_sampler_shortcuts_match_plain_euler(
    model: S2Mel, g: dict[str, torch.Tensor], rate: float, prompt_frames: str | int
) -> None:
    tp = g["in.ref_mel"].shape[-1] if prompt_frames == "golden" else prompt_frames
    mu, style, noise = g["cat_condition"], g["in.style"], g["cfm.noise_z"]
    prompt = g["in.ref_mel"][..., :tp]
    with torch.inference_mode():
        want = _euler_reference(model.cfm.estimator, mu, prompt, style, noise, 3, rate)
    got = model.cfm.inference(mu, mu.shape[1], prompt, style, steps=3, cfg_rate=rate, noise=noise)
    _close(f"sampler rate={rate} prompt={tp}", got, want, 1e-5)


def test_sampler_noise_generator_and_cancel(model: S2Mel, g: dict[str, torch.Tensor]) -> None:
    mu, prompt, style = g["cat_condition"], g["in.ref_mel"], g["in.style"]
    runs = [
        model.cfm.inference(mu, None, prompt, style, steps=2, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(i: int, n: int) -> None:
        seen.append(i)
        if i == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        model.cfm.inference(mu, None, prompt, style, steps=5, noise=g["cfm.noise_z"], cancel=cancel, on_step=on_step)
    assert seen == [1, 2]
    with pytest.raises(ValueError, match="noise"):
        model.cfm.inference(mu, None, prompt, style, steps=1, noise=g["cfm.noise_z"][..., :-1])


# ----------------------------------------------------------------------------------------------- loader


class TrainingArgs:
    """A plain class instance as training scripts put into checkpoints (not loadable with weights_only=True)."""

    def __init__(self) -> None:
        self.lr = 1e-4


class Payload:
    """Would create ``path`` if the loader ever executed what the file references."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def _golden_state() -> dict:
    return torch.load(ref("s2mel", "s2mel.pth"), map_location="cpu", weights_only=True)


def test_loader_skips_training_state(tmp_path: Path, model: S2Mel, cfg: S2MelConfig) -> None:
    state = _golden_state()
    net = state["net"]
    marker = tmp_path / "executed"
    lr_params = [p for p in net["length_regulator"].values()]
    state["net"] = {
        "cfm": net["cfm"],
        "length_regulator": {f"module.{k}": v for k, v in net["length_regulator"].items()},  # DDP prefix
        "gpt_layer": net["gpt_layer"],
    }
    state["optimizer"] = {
        "state": {i: {"exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p), "step": torch.tensor(3.0)}
                  for i, p in enumerate(lr_params)},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.98), "params": list(range(len(lr_params)))}],
    }
    state["args"] = argparse.Namespace(batch_size=4, config="x.yml")
    state["trainer"] = TrainingArgs()
    state["payload"] = Payload(marker)
    state["ema"] = {"cfm": [[torch.zeros(3)]]}
    path = tmp_path / "s2mel.pth"
    torch.save(state, path)

    with pytest.raises(pickle.UnpicklingError):  # the fixture really carries objects weights_only=True refuses
        torch.load(path, map_location="cpu", weights_only=True)
    loaded = S2Mel.from_checkpoint(path, cfg)
    assert not marker.exists(), "the loader executed code from the checkpoint"
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def _write_net(tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    state = _golden_state()
    edit(state)
    path = tmp_path / "s2mel.pth"
    torch.save(state, path)
    return path


# missing, misshaped and extra keys and legacy (non-zip) files: tests/test_s2mel_loader.py


def test_loader_refuses_missing_part(tmp_path: Path, cfg: S2MelConfig) -> None:
    path = _write_net(tmp_path, lambda s: s["net"].pop("length_regulator"))
    with pytest.raises(CheckpointError, match="length_regulator"):
        S2Mel.from_checkpoint(path, cfg)


def test_loader_refuses_broken_files(tmp_path: Path, cfg: S2MelConfig) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        S2Mel.from_checkpoint(tmp_path / "nope.pth", cfg)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a torch zip"):
        S2Mel.from_checkpoint(junk, cfg)
    good = ref("s2mel", "s2mel.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError):
        S2Mel.from_checkpoint(cut, cfg)
    no_net = tmp_path / "no_net.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, no_net)
    with pytest.raises(CheckpointError, match="'net'"):
        S2Mel.from_checkpoint(no_net, cfg)
    odd = _write_net(tmp_path, lambda s: s["net"]["gpt_layer"].update({"2.bias": 3}))
    with pytest.raises(CheckpointError, match="not a tensor"):
        S2Mel.from_checkpoint(odd, cfg)
    # a zip of the right shape but without tensor records
    hollow = tmp_path / "hollow.pth"
    with zipfile.ZipFile(ref("s2mel", "s2mel.pth")) as src, zipfile.ZipFile(hollow, "w") as dst:
        for item in src.infolist():
            if "/data/" not in item.filename:
                dst.writestr(item, src.read(item))
    with pytest.raises(CheckpointError, match="lacks tensor data"):
        S2Mel.from_checkpoint(hollow, cfg)
