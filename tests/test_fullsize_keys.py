"""Our modules at the released configuration hold exactly the tensor keys and shapes of the official checkpoints.

``fullsize/*.json`` (see its README) give every tensor key of the seven official checkpoints with its shape and
dtype. Each module is built on the ``meta`` device (no memory, no init) at the released configuration, and the key
set goes through the same transforms our loaders apply (weight-norm folding, the ``net`` / ``generator`` wrappers,
the optional BatchNorm counters, the tied Qwen3 head) before it is compared key by key and shape by shape.

The configuration comes from ``data/config.yaml`` where it states a width; elsewhere from the key set itself, through
the functions our loaders use to infer widths from weights (``conditioning_widths``, ``gpt_layer_widths``,
``CAMPPlusConfig.from_state``), or, for the HF-style folders, from the reference's config.json (the real config with
only the sizes shrunk, per their READMEs) with the sizes read off the key set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from reference import ref
from torch import Tensor, nn

from core.bigvgan import BigVGAN, BigVGANConfig, generator_state
from core.campplus import CAMPPlus, CAMPPlusConfig, with_batch_counters
from core.checkpoints import fold_weight_norm
from core.config import IndexTTSConfig, load_config
from core.gpt.model import UnifiedVoice, conditioning_widths
from core.qwen3 import Qwen3Config, Qwen3ForCausalLM, checkpoint_state
from core.s2mel.model import PARTS, S2Mel, gpt_layer_widths, part_state
from core.semantic_codec import SemanticCodec, _backbone_and_linear
from core.w2vbert import W2VBert, W2VBertConfig

# dtype names as torch and safetensors write them
_DTYPES = {
    "float32": torch.float32, "F32": torch.float32, "float16": torch.float16, "F16": torch.float16,
    "bfloat16": torch.bfloat16, "BF16": torch.bfloat16, "float64": torch.float64, "F64": torch.float64,
    "int64": torch.int64, "I64": torch.int64, "int32": torch.int32, "I32": torch.int32, "bool": torch.bool,
    "BOOL": torch.bool, "uint8": torch.uint8, "U8": torch.uint8,
}


def _golden(name: str) -> dict[str, Any]:
    return json.loads(ref("fullsize", name).read_text(encoding="utf-8"))


def _meta(entries: Mapping[str, Any]) -> dict[str, Tensor]:
    """``{key: [shape, dtype]}`` -> weightless tensors of that shape and dtype."""
    out = {}
    for key, (shape, dtype) in entries.items():
        assert dtype in _DTYPES, f"{key}: unknown dtype {dtype!r} in the key set"
        out[key] = torch.empty(shape, dtype=_DTYPES[dtype], device="meta")
    return out


def _mismatches(module: nn.Module | Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """Every difference between a module's state dict and a checkpoint's: missing / unexpected keys, shapes, and
    dtype kinds (floating vs integer; our loaders cast floating weights to the model dtype, never integer ones)."""
    have = module.state_dict() if isinstance(module, nn.Module) else dict(module)
    problems = [f"missing from the module: {k} {list(state[k].shape)}" for k in state if k not in have]
    problems += [f"not in the checkpoint: {k} {list(have[k].shape)}" for k in have if k not in state]
    for key in state.keys() & have.keys():
        want, got = state[key], have[key]
        if tuple(want.shape) != tuple(got.shape):
            problems.append(f"shape of {key}: checkpoint {list(want.shape)}, module {list(got.shape)}")
        elif want.dtype.is_floating_point != got.dtype.is_floating_point or (
            not want.dtype.is_floating_point and want.dtype != got.dtype
        ):
            problems.append(f"dtype of {key}: checkpoint {want.dtype}, module {got.dtype}")
    return sorted(problems)


def _assert_fits(module: nn.Module | Mapping[str, Tensor], state: Mapping[str, Tensor], what: str) -> None:
    problems = _mismatches(module, state)
    assert not problems, f"{what}: {len(problems)} mismatch(es):\n  " + "\n  ".join(problems[:40])


def _count(state: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest index N in keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    found = [int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))]
    assert found, f"no key matches {pattern}"
    return max(found) + 1


@pytest.fixture(scope="module")
def cfg() -> IndexTTSConfig:
    return load_config(ref("data", "config.yaml"))


# ------------------------------------------------------------------------------------------------- the check


def test_comparison_catches_renames_reshapes_and_dtype_kinds() -> None:
    """The comparison itself fails on a renamed attribute, a changed width, a missing key and an int/float swap."""
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = {k: torch.empty_like(v, device="meta") for k, v in module.state_dict().items()}
    assert _mismatches(module, state) == []
    renamed = {("0.w" if k == "0.weight" else k): v for k, v in state.items()}
    assert _mismatches(module, renamed) == [
        "missing from the module: 0.w [4, 3]", "not in the checkpoint: 0.weight [4, 3]"
    ]
    reshaped = dict(state, **{"0.bias": torch.empty(5, device="meta")})
    assert _mismatches(module, reshaped) == ["shape of 0.bias: checkpoint [5], module [4]"]
    counter = dict(state, **{"1.num_batches_tracked": torch.empty((), dtype=torch.float32, device="meta")})
    assert _mismatches(module, counter) == [
        "dtype of 1.num_batches_tracked: checkpoint torch.float32, module torch.int64"
    ]
    half = dict(state, **{"0.weight": torch.empty(4, 3, dtype=torch.bfloat16, device="meta")})
    assert _mismatches(module, half) == []  # floating weights are cast to the model dtype on load


# ---------------------------------------------------------------------------------------------- checkpoints


def test_gpt(cfg: IndexTTSConfig) -> None:
    state = _meta(_golden("gpt.json"))
    assert len(state) == 665
    # as the pipeline loads it: the semantic width hint is the codec's hidden_size
    widths = conditioning_widths(state, cfg.gpt, cfg.semantic_codec.hidden_size, source="gpt.json")
    assert widths[0] == cfg.semantic_codec.hidden_size  # the w2v-BERT feature width both conformers take
    with torch.device("meta"):
        model = UnifiedVoice(cfg.gpt, *widths)
    _assert_fits(model, state, "gpt.pth")


def test_s2mel(cfg: IndexTTSConfig) -> None:
    net = {part: _meta(keys) for part, keys in _golden("s2mel.json").items()}
    assert set(net) == set(PARTS)
    widths = gpt_layer_widths(net["gpt_layer"], source="s2mel.json")
    assert widths[0] == cfg.gpt.model_dim  # gpt_layer takes the GPT latent
    with torch.device("meta"):
        model = S2Mel.for_net(net, cfg.s2mel, source="s2mel.json")
    assert any(k.endswith(".weight_g") for k in net["cfm"])  # the fold really runs
    for part in PARTS:
        module = getattr(model, part)
        _assert_fits(module, part_state(net, part, module, source="s2mel.json"), f"s2mel.pth net['{part}']")


def _w2v_config() -> W2VBertConfig:
    """The real facebook/w2v-bert-2.0 config: the reference's copy with the sizes of the full key set."""
    state = _golden("w2v.json")
    hf = json.loads(ref("w2vbert", "w2v-bert-2.0", "config.json").read_text(encoding="utf-8"))
    (hidden, features), _ = state["feature_projection.projection.weight"]
    head_dim = state["encoder.layers.0.self_attn.distance_embedding.weight"][0][1]
    hf.update(
        hidden_size=hidden,
        feature_projection_input_dim=features,
        num_hidden_layers=_count(state, r"encoder\.layers\.(\d+)\..*"),
        intermediate_size=state["encoder.layers.0.ffn1.intermediate_dense.weight"][0][0],
        num_attention_heads=hidden // head_dim,
        output_hidden_size=hidden,
    )
    return W2VBertConfig.from_hf(hf, source="w2v.json")


def test_w2v_bert() -> None:
    config = _w2v_config()
    assert config == W2VBertConfig()  # our defaults are the released model's
    state = _meta(_golden("w2v.json"))
    assert "masked_spec_embed" in state
    with torch.device("meta"):
        model = W2VBert(config)
    _assert_fits(model, state, "w2v-bert-2.0 model.safetensors")


def test_semantic_codec(cfg: IndexTTSConfig) -> None:
    raw = _meta(_golden("codec.json"))
    assert any(k.endswith(".weight_g") for k in raw)
    state = fold_weight_norm(raw, source="codec.json")
    with torch.device("meta"):  # as SemanticCodec.from_file: the model, and the unused decoder checked apart
        model = SemanticCodec(cfg.semantic_codec)
        holder = nn.Module()
        holder.decoder = _backbone_and_linear(cfg.semantic_codec)
    _assert_fits(model, {k: v for k, v in state.items() if not k.startswith("decoder.")}, "semantic codec")
    _assert_fits(holder, {k: v for k, v in state.items() if k.startswith("decoder.")}, "semantic codec decoder")


def test_campplus() -> None:
    state = _meta(_golden("campplus.json"))
    config = CAMPPlusConfig.from_state(state, source="campplus.json")
    assert config == CAMPPlusConfig()  # our defaults are the released model's
    with torch.device("meta"):
        model = CAMPPlus(config)
    counters = {k for k in state if k.endswith(".num_batches_tracked")}
    assert counters
    _assert_fits(model, with_batch_counters(state, model), "campplus_cn_common.bin")
    bare = {k: v for k, v in state.items() if k not in counters}  # a file without the counters loads as well
    _assert_fits(model, with_batch_counters(bare, model), "campplus_cn_common.bin without num_batches_tracked")


def _bigvgan_config(state: Mapping[str, Any]) -> BigVGANConfig:
    """NVIDIA's v2_22khz_80band_256x config: the reference's copy (only upsample_initial_channel shrunk) with the
    widths of the full key set."""
    data = json.loads(ref("bigvgan", "config.json").read_text(encoding="utf-8"))
    conv_pre = next(state[k][0] for k in ("conv_pre.weight", "conv_pre.weight_v") if k in state)
    data["upsample_initial_channel"], data["num_mels"] = conv_pre[0], conv_pre[1]
    stages = _count(state, r"ups\.(\d+)\.0\..*")
    assert stages == len(data["upsample_rates"])
    data["use_bias_at_final"] = "conv_post.bias" in state
    return BigVGANConfig.from_dict(data, source="bigvgan config")


@pytest.mark.parametrize("name", ["bigvgan.json", "bigvgan_no_weight_norm.json"])
def test_bigvgan(name: str) -> None:
    keys = _golden(name)
    config = _bigvgan_config(keys)
    state = generator_state({"generator": _meta(keys)}, source=name)  # the file's wrapper, weight norm folded
    if name == "bigvgan.json":
        assert any(k.endswith(".weight_g") for k in keys) and not any(k.endswith(".weight_g") for k in state)
    with torch.device("meta"):
        model = BigVGAN(config)
    _assert_fits(model, state, f"bigvgan_generator.pt ({name})")


def _qwen3_config(state: Mapping[str, Any]) -> Qwen3Config:
    """The Qwen3-0.6B config: the reference's copy (sizes shrunk) with the sizes of the full key set; tied
    embeddings when the file has no ``lm_head.weight``."""
    data = json.loads(ref("qwen_emotion", "tiny_qwen3", "config.json").read_text(encoding="utf-8"))
    vocab, hidden = state["model.embed_tokens.weight"][0]
    head_dim = state["model.layers.0.self_attn.q_norm.weight"][0][0]
    data.update(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=state["model.layers.0.mlp.gate_proj.weight"][0][0],
        num_hidden_layers=_count(state, r"model\.layers\.(\d+)\..*"),
        head_dim=head_dim,
        num_attention_heads=state["model.layers.0.self_attn.q_proj.weight"][0][0] // head_dim,
        num_key_value_heads=state["model.layers.0.self_attn.k_proj.weight"][0][0] // head_dim,
        tie_word_embeddings="lm_head.weight" not in state,
    )
    return Qwen3Config.from_dict(data, source="qwen3.json")


def test_qwen3() -> None:
    keys = _golden("qwen3.json")
    config = _qwen3_config(keys)
    assert config.tie_word_embeddings
    state = _meta(keys)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    _assert_fits(model, checkpoint_state(state, config), "qwen0.6bemo4-merge model.safetensors")
    # a copy of the tied head in the file is accepted (and ignored)
    vocab, hidden = keys["model.embed_tokens.weight"][0]
    with_head = dict(state, **{"lm_head.weight": torch.empty(vocab, hidden, dtype=torch.bfloat16, device="meta")})
    _assert_fits(model, checkpoint_state(with_head, config), "qwen0.6bemo4-merge with lm_head.weight")
    assert _mismatches(model, with_head) == [f"missing from the module: lm_head.weight [{vocab}, {hidden}]"]
