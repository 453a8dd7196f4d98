"""IndexTTS-2.5 codec (EnhancedCodec): decode with every intermediate, quantize, strict loading, release key set."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
import yaml
from reference import ref
from safetensors.torch import load_file

from core.checkpoints import CheckpointError
from core.codec_v25 import RELEASED, EnhancedCodec, EnhancedCodecConfig
from core.config import build

META = json.loads(ref("v2_5", "codec", "codec_goldens.json").read_text(encoding="utf-8"))
CASES = sorted(META["cases"])
CKPT = ref("v2_5", "codec", "codec.pth")


def _config() -> EnhancedCodecConfig:
    path = ref("v2_5", "codec", "config.yaml")
    return build(EnhancedCodecConfig, yaml.safe_load(path.read_text(encoding="utf-8"))["semantic_codec"], path)


@pytest.fixture(scope="module")
def goldens() -> dict[str, torch.Tensor]:
    return load_file(str(ref("v2_5", "codec", "codec_goldens.safetensors")))


@pytest.fixture(scope="module")
def codec() -> EnhancedCodec:
    return EnhancedCodec.from_file(CKPT, _config(), encoder=True)


def close(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol}"


def test_config_matches_goldens():
    cfg = _config()
    assert {k: getattr(cfg, k) for k in META["tiny_config"]} == META["tiny_config"]
    assert {k: getattr(RELEASED, k) for k in META["real_config"]} == META["real_config"]


def test_effective_weights(codec: EnhancedCodec):
    """weight = g * v / ||v|| (norm over dims 1, 2, no eps) from the file's weight_g / weight_v.

    Not compared with the goldens' ``quantizer.*.effective_weight``: those hold the stale ``.weight`` attribute of
    upstream's old-style weight_norm read before any forward (the random init, uncorrelated with the file);
    ``vq_out_project`` and ``decode_out`` show which weights upstream actually computes with.
    """
    state = torch.load(CKPT, map_location="cpu", weights_only=True)["model"]
    for name, module in (("in", codec.quantizer.stages[0].in_project), ("out", codec.quantizer.stages[0].out_project)):
        v, g = (state[f"quantizer.quantizers.0.{name}_project.weight_{s}"] for s in "vg")
        close(module.weight, g * v / v.pow(2).sum(dim=(1, 2), keepdim=True).sqrt(), 1e-6)


@pytest.mark.parametrize("case", CASES)
def test_decode_intermediates(codec: EnhancedCodec, goldens, case: str):
    g = {k[len(case) + 1 :]: v for k, v in goldens.items() if k.startswith(case + ".")}
    codes = g["codes"]
    assert codes.shape[1] == META["cases"][case]
    vq = codec.quantizer.stages[0]
    with torch.inference_mode():
        rows = vq.codebook(codes).transpose(1, 2)
        close(rows, g["vq_codebook_rows"], 1e-6)
        projected = vq.out_project(rows)
        close(projected, g["vq_out_project"], 1e-6)
        backbone, linear = codec.decoder[0], codec.decoder[1]
        x = backbone.embed(projected)
        close(x, g["decoder.embed_out"], 1e-5)
        x = backbone.norm(x.transpose(1, 2))
        close(x, g["decoder.norm_out"], 1e-5)
        x = x.transpose(1, 2)
        for i, block in enumerate(backbone.convnext):
            if f"decoder.convnext{i}.dwconv_out" in g:
                y = block.dwconv(x)
                close(y, g[f"decoder.convnext{i}.dwconv_out"], 1e-5)
                y = block.pwconv1(block.norm(y.transpose(1, 2)))
                close(y, g[f"decoder.convnext{i}.pwconv1_out"], 1e-5)
                close(block.pwconv2(F.gelu(y)), g[f"decoder.convnext{i}.pwconv2_out"], 1e-5)
            x = block(x)
            close(x, g[f"decoder.convnext{i}_out"], 1e-5)
        x = backbone.final_layer_norm(x.transpose(1, 2))
        close(x, g["decoder.final_layer_norm_out"], 1e-5)
        decoded = linear(x)
        close(decoded, g["decoder_out"], 1e-5)
        close(F.interpolate(decoded.transpose(1, 2), scale_factor=2, mode="nearest"), g["upsampled"], 1e-5)
        close(codec.upsample(decoded), g["decode_out"], 1e-4)
    out = codec.decode(codes)
    close(out, g["decode_out"], 1e-4)
    assert out.shape[1] == 2 * codes.shape[1]


def test_decode_only_load_matches(goldens):
    """The inference load (no encoder) gives the same decode and holds none of the encoder's weights."""
    codec = EnhancedCodec.from_file(CKPT, _config())
    assert not any(k.startswith(("down.", "encoder.")) for k in codec.state_dict())
    case = CASES[0]
    close(codec.decode(goldens[f"{case}.codes"]), goldens[f"{case}.decode_out"], 1e-4)
    with pytest.raises(RuntimeError, match="without its encoder"):
        codec.quantize(goldens["quantize.input"])


def test_quantize(codec: EnhancedCodec, goldens):
    x = goldens["quantize.input"]
    with torch.inference_mode():
        down = codec.down(x.transpose(1, 2))
        close(down, goldens["quantize.down_out"], 1e-4)
        enc = codec.encoder(F.gelu(down))
        close(enc, goldens["quantize.encoder_out"], 1e-4)
        close(codec.quantizer.stages[0].in_project(enc.transpose(1, 2)), goldens["quantize.in_project_out"], 1e-4)
    codes, quantized = codec.quantize(x)
    assert torch.equal(codes, goldens["quantize.indices"])
    close(quantized, goldens["quantize.quantized_out"], 1e-4)


def test_bad_codes(codec: EnhancedCodec):
    with pytest.raises(ValueError, match="must lie in"):
        codec.decode(torch.tensor([[0, codec.cfg.codebook_size]]))
    with pytest.raises(ValueError, match="integer codes"):
        codec.decode(torch.zeros(1, 3))


def _file_keys(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict names as the file spells them: weight-normed projections as weight_g / weight_v."""
    out: dict[str, tuple[int, ...]] = {}
    for key, value in module.state_dict().items():
        if re.fullmatch(r"quantizer\.quantizers\.\d+\.(in|out)_project\.weight", key):
            out[key + "_g"] = (value.shape[0], 1, 1)
            out[key + "_v"] = tuple(value.shape)
        else:
            out[key] = tuple(value.shape)
    return out


def test_tiny_file_keys_and_released_key_set():
    file_keys = {k: tuple(s) for k, s in META["codec_pth"]["keys"]}
    assert len(file_keys) == META["codec_pth"]["n_model_tensors"]
    assert _file_keys(EnhancedCodec(_config(), encoder=True)) == file_keys
    # Released size on the meta device: the tiny names with every ConvNeXt block index of the release, and the
    # tiny shapes with the tiny backbone widths replaced by the released ones.
    tiny, real = META["tiny_config"], META["real_config"]
    widths = {tiny["vocos_dim"]: real["vocos_dim"], tiny["vocos_intermediate_dim"]: real["vocos_intermediate_dim"]}
    expected: dict[str, tuple[int, ...]] = {}
    for key, shape in file_keys.items():
        real_shape = tuple(widths.get(d, d) for d in shape)
        if ".convnext.0." in key:
            for i in range(real["vocos_num_layers"]):
                expected[key.replace(".convnext.0.", f".convnext.{i}.")] = real_shape
        elif ".convnext." not in key:
            expected[key] = real_shape
    with torch.device("meta"):
        released = EnhancedCodec(RELEASED, encoder=True)
    assert _file_keys(released) == expected
    assert len(expected) == META["codec_pth"]["n_tensors_at_real_config"]


def test_strict_loading(tmp_path):
    data = torch.load(CKPT, map_location="cpu", weights_only=True)
    state = dict(data["model"])
    state.pop("up.bias")
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: up\.bias"):
        EnhancedCodec.from_file(tmp_path / "missing.pth", _config())
    torch.save({"model": {**data["model"], "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        EnhancedCodec.from_file(tmp_path / "extra.pth", _config())
    torch.save(data["model"], tmp_path / "flat.pth")
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        EnhancedCodec.from_file(tmp_path / "flat.pth", _config())
    wrong = EnhancedCodecConfig(**{**META["tiny_config"], "vocos_num_layers": 3})
    with pytest.raises(CheckpointError, match="missing keys"):
        EnhancedCodec.from_file(CKPT, wrong)
