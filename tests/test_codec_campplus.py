"""Parity of the semantic codec and CAMPPlus with the ``codec_campplus`` goldens, and strict loading.

Cases, tensors and the tiny configs all come from the golden's JSON / safetensors; tolerances from its README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from reference import ref
from safetensors.torch import load_file, save_file

from core.campplus import CAMPPlus, CAMPPlusConfig, stats_pool
from core.checkpoints import CheckpointError
from core.config import SemanticCodecConfig
from core.semantic_codec import SemanticCodec

FOLDER = "codec_campplus"
# README "Recommended tolerances".
CODEC_OUT_ATOL = 5e-6  # quantize() embedding, vq2emb
CODEC_STAGE_ATOL = 2e-5  # encoder / VQ intermediates
STYLE_ATOL = 2e-5  # CAMPPlus output
CAMPPLUS_STAGE_ATOL = 5e-4  # CAMPPlus stage outputs (values up to ~100)
CAMPPLUS_STAGE_RTOL = 1e-4  # README: "atol 5e-04 (or rtol 1e-4)": stage values scale with clip and weights


def _meta() -> dict:
    return json.loads(ref(FOLDER, f"{FOLDER}.json").read_text(encoding="utf-8"))


META = _meta()
CODEC_CASES = sorted(META["codec"]["cases"])
CAMPPLUS_CASES = sorted(META["campplus"]["cases"]) + (["campplus.probe"] if "probe" in META["campplus"] else [])


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(ref(FOLDER, f"{FOLDER}.safetensors")))


@pytest.fixture(scope="module")
def codec_cfg() -> SemanticCodecConfig:
    return SemanticCodecConfig(**META["codec"]["tiny_config"])


@pytest.fixture(scope="module")
def codec_path() -> Path:
    return ref(FOLDER, "semantic_codec", "model.safetensors")


@pytest.fixture(scope="module")
def codec(codec_path: Path, codec_cfg: SemanticCodecConfig) -> SemanticCodec:
    return SemanticCodec.from_file(codec_path, codec_cfg)


@pytest.fixture(scope="module")
def campplus_path() -> Path:
    return ref(FOLDER, "campplus_cn_common.bin")


@pytest.fixture(scope="module")
def campplus(campplus_path: Path) -> CAMPPlus:
    return CAMPPlus.from_checkpoint(campplus_path)


def _compare(
    golden: dict[str, torch.Tensor], prefix: str, ours: dict[str, torch.Tensor], atol, rtol=lambda name: 0.0
) -> None:
    """Every golden tensor under ``prefix`` must have been computed and match; ``atol(name)`` gives the bound."""
    names = sorted(k[len(prefix) :] for k in golden if k.startswith(prefix))
    assert names, f"no golden tensors under {prefix}"
    unchecked = [n for n in names if n not in ours]
    assert not unchecked, f"golden tensors this test does not compute: {unchecked}"
    for name in names:
        want, got = golden[prefix + name], ours[name]
        assert got.shape == want.shape, f"{prefix}{name}: shape {tuple(got.shape)} != golden {tuple(want.shape)}"
        if want.dtype == torch.int64:
            mismatch = (got != want).nonzero()
            assert mismatch.numel() == 0, (
                f"{prefix}{name}: {len(mismatch)} values differ, first at {mismatch[0].tolist()}"
            )
            continue
        err = (got.float() - want).abs()
        bound = torch.clamp(rtol(name) * want.abs(), min=atol(name))  # |diff| <= max(atol, rtol * |golden|)
        assert bool((err <= bound).all()), (
            f"{prefix}{name}: max abs error {err.max().item():.3e} > {atol(name):.1e} (rtol {rtol(name):.0e})"
        )


# ------------------------------------------------------------------------------------------ semantic codec


@torch.inference_mode()
def _codec_trace(codec: SemanticCodec, x: torch.Tensor) -> dict[str, torch.Tensor]:
    backbone, linear = codec.encoder[0], codec.encoder[1]
    out: dict[str, torch.Tensor] = {}
    h = out["enc.embed_conv"] = backbone.embed(x.transpose(1, 2))
    out["enc.embed_norm"] = backbone.norm(h.transpose(1, 2))
    h = out["enc.embed_norm"].transpose(1, 2)
    for i, block in enumerate(backbone.convnext):
        h = out[f"enc.convnext.{i}"] = block(h)
    out["enc.final_layer_norm"] = backbone.final_layer_norm(h.transpose(1, 2))
    out["enc.linear_out"] = linear(out["enc.final_layer_norm"])
    vq = codec.quantizer.quantizers[0]
    z_e = out["vq.in_project"] = vq.in_project(out["enc.linear_out"].transpose(1, 2))
    out["vq.l2norm_latent"] = torch.nn.functional.normalize(z_e, dim=1)
    top2 = vq.scores(z_e).topk(2, dim=-1).values
    out["vq.top1_minus_top2"] = top2[..., 0] - top2[..., 1]
    codes, quantized = codec.quantize(x)
    out["vq.codebook_vectors"] = vq.codebook(codes).transpose(1, 2)
    out["codes"], out["quantized"] = codes, quantized
    return out


@pytest.mark.parametrize("case", CODEC_CASES)
def test_codec_quantize_matches_golden(case: str, codec: SemanticCodec, golden: dict[str, torch.Tensor]) -> None:
    prefix = f"{case}."
    assert f"{prefix}codes" in golden and f"{prefix}quantized" in golden
    ours = _codec_trace(codec, golden[f"{prefix}input"])
    ours["input"] = golden[f"{prefix}input"]
    assert ours["codes"].dtype == torch.int64
    _compare(golden, prefix, ours, lambda n: CODEC_OUT_ATOL if n == "quantized" else CODEC_STAGE_ATOL)
    # vq2emb of the codes quantize() picked gives quantize()'s embedding, channels first.
    emb = codec.vq2emb(ours["codes"])
    err = (emb.transpose(1, 2) - golden[f"{prefix}quantized"]).abs().max().item()
    assert err <= CODEC_OUT_ATOL, f"{case}: vq2emb(codes) vs quantized max abs error {err:.3e}"


def test_codec_vq2emb_matches_golden(codec: SemanticCodec, golden: dict[str, torch.Tensor]) -> None:
    codes = golden["codec.vq2emb.codes"]
    out = codec.vq2emb(codes)
    _compare(golden, "codec.vq2emb.", {"codes": codes, "out": out}, lambda n: CODEC_OUT_ATOL)


def test_codec_rejects_bad_input(codec: SemanticCodec, codec_cfg: SemanticCodecConfig) -> None:
    with pytest.raises(ValueError, match="features"):
        codec.quantize(torch.zeros(1, 5, codec_cfg.hidden_size + 1))
    with pytest.raises(ValueError, match="start/stop"):
        codec.vq2emb(torch.tensor([[0, codec_cfg.codebook_size]]))


def _save_codec(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize(
    "victim",
    [
        "encoder.",
        "decoder.",
        "quantizer.quantizers.0.in_project.weight_g",
        "quantizer.quantizers.0.out_project.weight_v",
    ],
)
def test_codec_refuses_missing_key(victim: str, codec_path: Path, codec_cfg: SemanticCodecConfig, tmp_path: Path):
    state = load_file(str(codec_path))
    if victim.endswith("."):  # a whole section: drop its last key
        victim = sorted(k for k in state if k.startswith(victim))[-1]
    del state[victim]
    bad = _save_codec(state, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="missing") as info:
        SemanticCodec.from_file(bad, codec_cfg)
    assert str(bad) in str(info.value)
    assert victim.removesuffix("_v") in str(info.value)  # weight_v lost: the folded .weight is missing


@pytest.mark.parametrize("extra", ["encoder.0.extra.weight", "decoder.0.extra.weight", "something_else"])
def test_codec_refuses_extra_key(extra: str, codec_path: Path, codec_cfg: SemanticCodecConfig, tmp_path: Path):
    state = load_file(str(codec_path))
    state[extra] = torch.zeros(3)
    bad = _save_codec(state, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        SemanticCodec.from_file(bad, codec_cfg)
    assert str(bad) in str(info.value) and extra in str(info.value)


def test_codec_refuses_misshaped_key(codec_path: Path, codec_cfg: SemanticCodecConfig, tmp_path: Path):
    state = load_file(str(codec_path))
    key = "quantizer.quantizers.0.codebook.weight"
    state[key] = state[key][:-1]
    bad = _save_codec(state, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointError, match="wrong shapes") as info:
        SemanticCodec.from_file(bad, codec_cfg)
    assert str(bad) in str(info.value) and key in str(info.value)


def test_codec_refuses_wrong_config(codec_path: Path, codec_cfg: SemanticCodecConfig):
    wrong = SemanticCodecConfig(**{**vars(codec_cfg), "vocos_num_layers": codec_cfg.vocos_num_layers + 1})
    with pytest.raises(CheckpointError, match="missing keys") as info:
        SemanticCodec.from_file(codec_path, wrong)
    assert str(codec_path) in str(info.value)


def test_codec_refuses_truncated_file(codec_path: Path, codec_cfg: SemanticCodecConfig, tmp_path: Path):
    data = codec_path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        SemanticCodec.from_file(bad, codec_cfg)
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------------------------------------ CAMPPlus


@torch.inference_mode()
def _campplus_trace(model: CAMPPlus, fbank: torch.Tensor) -> dict[str, torch.Tensor]:
    head, xv = model.head, model.xvector
    out: dict[str, torch.Tensor] = {"input_fbank_centered": fbank}
    x = fbank[None].transpose(1, 2).unsqueeze(1)
    out["head.conv1"] = head.conv1(x)
    h = torch.relu(head.bn1(out["head.conv1"]))
    out["head.layer1.0"] = head.layer1[0](h)
    out["head.layer1"] = head.layer1(h)
    out["head.layer2"] = head.layer2(out["head.layer1"])
    out["head.bn2"] = head.bn2(head.conv2(out["head.layer2"]))
    out["head"] = head(fbank[None].transpose(1, 2))
    h = out["xvector.tdnn"] = xv.tdnn(out["head"])
    for b in (1, 2, 3):
        block = getattr(xv, f"block{b}")
        out[f"xvector.block{b}.tdnnd1"] = block.tdnnd1(h)
        out[f"xvector.block{b}"] = block(h)
        h = out[f"xvector.transit{b}"] = getattr(xv, f"transit{b}")(out[f"xvector.block{b}"])
    out["xvector.out_nonlinear"] = xv.out_nonlinear(h)
    out["xvector.stats"] = stats_pool(out["xvector.out_nonlinear"])
    out["xvector.dense"] = xv.dense(out["xvector.stats"])
    out["style"] = model(fbank[None])
    return out


def _campplus_atol(name: str) -> float:
    return STYLE_ATOL if name in ("style", "xvector.dense") else CAMPPLUS_STAGE_ATOL


def _campplus_rtol(name: str) -> float:
    return 0.0 if name in ("style", "xvector.dense") else CAMPPLUS_STAGE_RTOL


@pytest.mark.parametrize("case", CAMPPLUS_CASES)
def test_campplus_matches_golden(case: str, campplus: CAMPPlus, golden: dict[str, torch.Tensor]) -> None:
    prefix = f"{case}."
    assert f"{prefix}style" in golden
    ours = _campplus_trace(campplus, golden[f"{prefix}input_fbank_centered"])
    _compare(golden, prefix, ours, _campplus_atol, _campplus_rtol)


def test_campplus_widths_read_from_weights(campplus: CAMPPlus) -> None:
    args = META["campplus"]["constructor_args"]
    cfg = campplus.cfg
    for name in ("feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels"):
        assert getattr(cfg, name) == args[name], name
    assert not campplus.training


def test_campplus_explicit_config(campplus_path: Path, campplus: CAMPPlus, golden: dict[str, torch.Tensor]) -> None:
    args = META["campplus"]["constructor_args"]
    fields = ("feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels")
    explicit = CAMPPlus.from_checkpoint(campplus_path, CAMPPlusConfig(**{k: args[k] for k in fields}))
    fbank = golden[f"{CAMPPLUS_CASES[0]}.input_fbank_centered"][None]
    with torch.inference_mode():
        assert torch.equal(explicit(fbank), campplus(fbank))
    wrong = CAMPPlusConfig(**{**{k: args[k] for k in fields}, "growth_rate": args["growth_rate"] * 2})
    with pytest.raises(CheckpointError, match="wrong shapes") as info:
        CAMPPlus.from_checkpoint(campplus_path, wrong)
    assert str(campplus_path) in str(info.value)


def _campplus_state(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def test_campplus_accepts_file_without_batch_counters(
    campplus_path: Path, campplus: CAMPPlus, golden: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = {k: v for k, v in _campplus_state(campplus_path).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.bin"
    torch.save(state, path)
    model = CAMPPlus.from_checkpoint(path)
    fbank = golden[f"{CAMPPLUS_CASES[0]}.input_fbank_centered"][None]
    with torch.inference_mode():
        assert torch.equal(model(fbank), campplus(fbank))


def test_campplus_refuses_missing_key(campplus_path: Path, tmp_path: Path) -> None:
    state = _campplus_state(campplus_path)
    victim = "xvector.block1.tdnnd1.cam_layer.linear2.bias"
    assert victim in state
    del state[victim]
    bad = tmp_path / "missing.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="missing keys") as info:
        CAMPPlus.from_checkpoint(bad)
    assert str(bad) in str(info.value) and victim in str(info.value)


def test_campplus_refuses_missing_size_key(campplus_path: Path, tmp_path: Path) -> None:
    state = _campplus_state(campplus_path)
    del state["xvector.tdnn.linear.weight"]
    bad = tmp_path / "missing_size.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="xvector.tdnn.linear.weight") as info:
        CAMPPlus.from_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_campplus_refuses_extra_key(campplus_path: Path, tmp_path: Path) -> None:
    state = _campplus_state(campplus_path)
    state["xvector.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "extra.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        CAMPPlus.from_checkpoint(bad)
    assert str(bad) in str(info.value) and "xvector.extra.weight" in str(info.value)


def test_campplus_refuses_misshaped_key(campplus_path: Path, tmp_path: Path) -> None:
    state = _campplus_state(campplus_path)
    key = "xvector.block2.tdnnd3.cam_layer.linear1.weight"
    state[key] = state[key][:-1]
    bad = tmp_path / "shape.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="wrong shapes") as info:
        CAMPPlus.from_checkpoint(bad)
    assert str(bad) in str(info.value) and key in str(info.value)


def test_campplus_refuses_truncated_file(campplus_path: Path, tmp_path: Path) -> None:
    data = campplus_path.read_bytes()
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        CAMPPlus.from_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_campplus_rejects_bad_input(campplus: CAMPPlus) -> None:
    with pytest.raises(ValueError, match="fbank"):
        campplus(torch.zeros(1, 50, campplus.cfg.feat_dim + 1))
    with pytest.raises(ValueError, match="too short"):
        campplus(torch.zeros(1, 2, campplus.cfg.feat_dim))
