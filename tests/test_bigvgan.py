"""BigVGAN v2 vocoder against the bigvgan goldens (real v2_22khz_80band_256x structure, 128 initial channels)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from reference import ref
from safetensors.torch import load_file

from core.bigvgan import Activation1d, BigVGAN, default_filter
from core.checkpoints import CheckpointError

ATOL = 1e-4  # README: waveforms, pre-clamp outputs and all intermediates
ATOL_ACT = 1e-5  # README: standalone Activation1d goldens and filters
ATOL_FOLDED = 1e-6  # README: folded weights


def _golden_names() -> list[str]:
    import json

    return sorted(json.loads(ref("bigvgan", "bigvgan_goldens.json").read_text(encoding="utf-8"))["tensors"])


NAMES = _golden_names()
INPUTS = sorted(n[: -len(".mel")] for n in NAMES if n.endswith(".mel"))
ACT_CASES = sorted(m.group(1) for n in NAMES if (m := re.fullmatch(r"act1d\.(\w+)\.x", n)))
FOLDED = [n for n in NAMES if n.startswith("folded.")]


@pytest.fixture(scope="module")
def goldens() -> dict[str, torch.Tensor]:
    return load_file(str(ref("bigvgan", "bigvgan_goldens.safetensors")))


@pytest.fixture(scope="module")
def vocoder() -> BigVGAN:
    return BigVGAN.from_pretrained(ref("bigvgan"))


def _close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float = ATOL) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double() - want.double()).abs().max().item()
    assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"


def test_golden_set_is_complete() -> None:
    assert INPUTS and ACT_CASES and FOLDED


def test_config_from_file(vocoder: BigVGAN) -> None:
    import json

    cfg = json.loads(ref("bigvgan", "config.json").read_text(encoding="utf-8"))
    assert vocoder.cfg.upsample_initial_channel == cfg["upsample_initial_channel"]
    assert vocoder.cfg.upsample_rates == cfg["upsample_rates"]
    assert vocoder.hop_size == cfg["hop_size"]
    assert vocoder.conv_pre.out_channels == cfg["upsample_initial_channel"]
    assert vocoder.conv_post.bias is None if not cfg["use_bias_at_final"] else vocoder.conv_post.bias is not None
    assert len(vocoder.resblocks) == len(cfg["upsample_rates"]) * len(cfg["resblock_kernel_sizes"])


def _module_key(golden: str) -> str:
    """``folded.ups2.weight`` -> ``ups.2.0.weight``;
    ``folded.resblock3.convs1_1.weight`` -> ``resblocks.3.convs1.1.weight``."""
    key = golden[len("folded.") :]
    key = re.sub(r"^ups(\d+)\.", r"ups.\1.0.", key)
    key = re.sub(r"^resblock(\d+)\.", r"resblocks.\1.", key)
    return re.sub(r"\.(convs\d?)_(\d+)\.", r".\1.\2.", key)


@pytest.mark.parametrize("name", FOLDED)
def test_folded_weights(vocoder: BigVGAN, goldens: dict[str, torch.Tensor], name: str) -> None:
    state = vocoder.state_dict()
    _close(name, state[_module_key(name)], goldens[name], ATOL_FOLDED)


def test_filters_loaded_and_verified(vocoder: BigVGAN, goldens: dict[str, torch.Tensor]) -> None:
    _close("recomputed filter", default_filter(), goldens["filter.upsample"], ATOL_ACT)
    _close("filter.downsample", goldens["filter.downsample"], goldens["filter.upsample"], ATOL_ACT)
    buffers = dict(vocoder.named_buffers())
    ups = [k for k in buffers if k.endswith("upsample.filter")]
    downs = [k for k in buffers if k.endswith("downsample.lowpass.filter")]
    assert len(ups) == len(downs) == 1 + 6 * len(vocoder.resblocks)
    for k in ups:
        _close(k, buffers[k], goldens["filter.upsample"], ATOL_ACT)
    for k in downs:
        _close(k, buffers[k], goldens["filter.downsample"], ATOL_ACT)


@pytest.mark.parametrize("blocks", [True, False], ids=["cpu-blocks", "convolutions"])
@pytest.mark.parametrize("case", ACT_CASES)
def test_activation1d(goldens: dict[str, torch.Tensor], case: str, blocks: bool) -> None:
    log_alpha, log_beta = goldens["act1d.log_alpha"], goldens["act1d.log_beta"]
    act = Activation1d(log_alpha.numel())
    act.use_blocks = blocks
    with torch.no_grad():
        act.act.alpha.copy_(log_alpha)
        act.act.beta.copy_(log_beta)
        x = goldens[f"act1d.{case}.x"]
        up = act.upsample_interleaved(x)
        _close(f"{case}.upsampled", up, goldens[f"act1d.{case}.upsampled"], ATOL_ACT)
        _close(f"{case}.snakebeta", act.act(goldens[f"act1d.{case}.upsampled"]), goldens[f"act1d.{case}.snakebeta"],
               ATOL_ACT)
        _close(f"{case}.downsampled", act.downsample_interleaved(goldens[f"act1d.{case}.snakebeta"]),
               goldens[f"act1d.{case}.y"], ATOL_ACT)
        _close(f"{case}.y", act(x), goldens[f"act1d.{case}.y"], ATOL_ACT)


def _trace(voc: BigVGAN, mel: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every intermediate under the goldens' names, each computed from our own previous output."""
    out: dict[str, torch.Tensor] = {}
    n = len(voc.cfg.resblock_kernel_sizes)
    x = out["conv_pre"] = voc.conv_pre(mel)
    for i in range(voc.num_stages):
        x = out[f"ups{i}"] = voc.ups[i][0](x)
        blocks = []
        for j in range(i * n, (i + 1) * n):
            block = voc.resblocks[j]
            h = x
            for m, (c1, c2) in enumerate(zip(block.convs1, block.convs2)):
                t = out[f"resblock{j}.act{2 * m}"] = block.activations[2 * m](h)
                t = out[f"resblock{j}.convs1_{m}"] = c1(t)
                t = out[f"resblock{j}.act{2 * m + 1}"] = block.activations[2 * m + 1](t)
                t = out[f"resblock{j}.convs2_{m}"] = c2(t)
                h = h + t
            out[f"resblock{j}"] = h
            blocks.append(h)
        acc = blocks[0]
        for b in blocks[1:]:
            acc = acc + b
        x = out[f"stage{i}_out"] = acc / n
    post = voc.activation_post
    out["activation_post.upsample"] = post.upsample_interleaved(x)
    out["activation_post.snakebeta"] = post.act(out["activation_post.upsample"])
    x = out["activation_post"] = post(x)
    x = out["conv_post_preclamp"] = voc.conv_post(x)
    out["wav"] = x.clamp(-1, 1)
    return out


@pytest.mark.parametrize("inp", INPUTS)
def test_every_stage_chained(vocoder: BigVGAN, goldens: dict[str, torch.Tensor], inp: str) -> None:
    with torch.no_grad():
        trace = _trace(vocoder, goldens[f"{inp}.mel"])
    names = [n for n in NAMES if n.startswith(f"{inp}.") and n != f"{inp}.mel"]
    assert f"{inp}.wav" in names
    for name in names:
        key = name[len(inp) + 1 :]
        assert key in trace, f"golden {name} has no counterpart in the port's trace"
        _close(name, trace[key], goldens[name])


@pytest.mark.parametrize("inp", INPUTS)
def test_each_stage_from_golden_input(vocoder: BigVGAN, goldens: dict[str, torch.Tensor], inp: str) -> None:
    """Each stage fed the golden output of the stage before it (localizes a failure)."""
    g = {n[len(inp) + 1 :]: t for n, t in goldens.items() if n.startswith(f"{inp}.")}
    checked = 0
    with torch.no_grad():
        _close(f"{inp}.conv_pre", vocoder.conv_pre(g["mel"]), g["conv_pre"])
        prev = g["conv_pre"]
        for i in range(vocoder.num_stages):
            if f"ups{i}" in g:
                _close(f"{inp}.ups{i}", vocoder.ups[i][0](prev), g[f"ups{i}"])
                checked += 1
            _close(f"{inp}.stage{i}_out", vocoder.stage(i, prev), g[f"stage{i}_out"])
            prev = g[f"stage{i}_out"]
        _close(f"{inp}.conv_post_preclamp", vocoder.finish(prev), g["conv_post_preclamp"])
        wav = vocoder(g["mel"])
    _close(f"{inp}.wav", wav, g["wav"])
    assert wav.shape[-1] == vocoder.hop_size * g["mel"].shape[-1]
    assert wav.abs().max() <= 1.0
    assert checked == sum(1 for k in g if re.fullmatch(r"ups\d+", k))


@pytest.mark.parametrize("mode", ["small-blocks", "convolutions"])
@pytest.mark.parametrize("inp", INPUTS)
def test_waveform_other_activation_paths(
    vocoder: BigVGAN, goldens: dict[str, torch.Tensor], inp: str, mode: str
) -> None:
    """The CPU path with many (channel x time) blocks, incl. ragged last blocks, and the whole-signal conv path."""
    acts = [m for m in vocoder.modules() if isinstance(m, Activation1d)]
    try:
        for m in acts:
            m.use_blocks = mode == "small-blocks"
            m.block_elems = 1000  # 256-sample time blocks, a few channels per block
        with torch.no_grad():
            wav = vocoder(goldens[f"{inp}.mel"])
    finally:
        for m in acts:
            m.use_blocks = None
            del m.block_elems
    _close(f"{inp}.wav ({mode})", wav, goldens[f"{inp}.wav"])


@pytest.mark.parametrize("inp", INPUTS)
def test_resblocks_from_golden_input(vocoder: BigVGAN, goldens: dict[str, torch.Tensor], inp: str) -> None:
    g = {n[len(inp) + 1 :]: t for n, t in goldens.items() if n.startswith(f"{inp}.")}
    n = len(vocoder.cfg.resblock_kernel_sizes)
    blocks = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"resblock(\d+)", k)))
    with torch.no_grad():
        for j in blocks:
            _close(f"{inp}.resblock{j}", vocoder.resblocks[j](g[f"ups{j // n}"]), g[f"resblock{j}"])
        if "activation_post" in g:
            last = g[f"stage{vocoder.num_stages - 1}_out"]
            _close(f"{inp}.activation_post", vocoder.activation_post(last), g["activation_post"])


def test_half_input_keeps_activation_in_float32(goldens: dict[str, torch.Tensor]) -> None:
    """fp16 convolutions around the activation: the activation itself computes in float32."""
    case = ACT_CASES[0]
    act = Activation1d(goldens["act1d.log_alpha"].numel())
    with torch.no_grad():
        act.act.alpha.copy_(goldens["act1d.log_alpha"])
        act.act.beta.copy_(goldens["act1d.log_beta"])
        x = goldens[f"act1d.{case}.x"]
        y_half = act.half()(x.half())
    assert y_half.dtype == torch.float16
    # only the input and output roundings to float16 remain
    _close(f"{case}.y (half)", y_half.float(), goldens[f"act1d.{case}.y"], 2e-2)


# ----------------------------------------------------------------------------------------------- loading


def _copy_release(tmp_path: Path, state: dict[str, torch.Tensor] | None = None, wrap: bool = True) -> Path:
    folder = tmp_path / "bigvgan"
    folder.mkdir()
    shutil.copy(ref("bigvgan", "config.json"), folder / "config.json")
    if state is None:
        shutil.copy(ref("bigvgan", "bigvgan_generator.pt"), folder / "bigvgan_generator.pt")
    else:
        torch.save({"generator": state} if wrap else state, folder / "bigvgan_generator.pt")
    return folder


def _release_state() -> dict[str, torch.Tensor]:
    return dict(torch.load(ref("bigvgan", "bigvgan_generator.pt"), weights_only=True)["generator"])


def test_folded_file_loads_the_same(tmp_path: Path, vocoder: BigVGAN, goldens: dict[str, torch.Tensor]) -> None:
    folder = _copy_release(tmp_path, vocoder.state_dict())
    other = BigVGAN.from_pretrained((folder / "config.json", folder / "bigvgan_generator.pt"))
    inp = INPUTS[0]
    with torch.no_grad():
        _close("folded-file wav", other(goldens[f"{inp}.mel"]), goldens[f"{inp}.wav"])


def test_missing_key_is_refused(tmp_path: Path) -> None:
    state = _release_state()
    del state["resblocks.4.activations.2.act.beta"]
    folder = _copy_release(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"bigvgan_generator\.pt.*missing keys: resblocks\.4\.activations\.2"):
        BigVGAN.from_pretrained(folder)


def test_misshaped_key_is_refused(tmp_path: Path) -> None:
    state = _release_state()
    state["conv_pre.weight_v"] = state["conv_pre.weight_v"][:, :40]
    folder = _copy_release(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"bigvgan_generator\.pt.*wrong shapes: conv_pre\.weight"):
        BigVGAN.from_pretrained(folder)


def test_extra_key_is_refused(tmp_path: Path) -> None:
    state = _release_state()
    state["conv_post.bias"] = torch.zeros(1)  # the config says use_bias_at_final false
    folder = _copy_release(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"bigvgan_generator\.pt.*unexpected keys: conv_post\.bias"):
        BigVGAN.from_pretrained(folder)


def test_wrong_filter_is_refused(tmp_path: Path) -> None:
    state = _release_state()
    state["activation_post.upsample.filter"] = torch.full((1, 1, 12), 1 / 12)
    folder = _copy_release(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"activation_post\.upsample\.filter"):
        BigVGAN.from_pretrained(folder)


def test_unwrapped_or_foreign_file(tmp_path: Path) -> None:
    folder = _copy_release(tmp_path, {"model": torch.zeros(1)}, wrap=False)
    with pytest.raises(CheckpointError, match=r"bigvgan_generator\.pt has no 'generator'"):
        BigVGAN.from_pretrained(folder)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="BigVGAN folder not found"):
        BigVGAN.from_pretrained(tmp_path / "nowhere")
    folder = _copy_release(tmp_path)
    (folder / "bigvgan_generator.pt").unlink()
    with pytest.raises(CheckpointError, match=r"not found: .*bigvgan_generator\.pt"):
        BigVGAN.from_pretrained(folder)


def test_config_missing_key_is_named(tmp_path: Path) -> None:
    import json

    folder = _copy_release(tmp_path)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    del cfg["upsample_rates"]
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json lacks required keys: upsample_rates"):
        BigVGAN.from_pretrained(folder)


def test_bad_mel_shape(vocoder: BigVGAN) -> None:
    with pytest.raises(ValueError, match=r"expects a mel \[B, 80, T\]"):
        vocoder(torch.zeros(1, 100, 5))


def test_resblock_type_2_and_snake_build(vocoder: BigVGAN) -> None:
    """Config-driven variants upstream supports: AMPBlock2 (one conv per dilation) and plain Snake."""
    from dataclasses import replace

    cfg = replace(vocoder.cfg, resblock="2", activation="snake", use_tanh_at_final=True, use_bias_at_final=True)
    model = BigVGAN(cfg)
    keys = set(model.state_dict())
    assert "resblocks.0.convs.2.weight" in keys and "resblocks.0.convs1.0.weight" not in keys
    assert "resblocks.0.activations.2.act.alpha" in keys and "resblocks.0.activations.3.act.alpha" not in keys
    assert "resblocks.0.activations.0.act.beta" not in keys and "conv_post.bias" in keys
    with torch.no_grad():
        wav = model(torch.randn(1, cfg.num_mels, 3))
    assert wav.shape == (1, 1, 3 * model.hop_size) and wav.abs().max() < 1.0
