"""w2v-BERT 2.0 encoder and IndexTTS2 semantic features against the w2vbert goldens (tiny random model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reference import ref
from safetensors.torch import load_file, save_file

from core.checkpoints import CheckpointError
from core.w2vbert import SEMANTIC_LAYER, SemanticEncoder, W2VBert

ATOL = 2e-5  # README: float32 port vs float64 moves any tensor by < 3e-6
LAYER0_PARTS = ("ffn1", "self_attn", "conv_module", "ffn2")


def _facts() -> dict:
    return json.loads(ref("w2vbert", "w2vbert.json").read_text(encoding="utf-8"))


CASES = sorted(_facts()["cases"])


@pytest.fixture(scope="module")
def goldens() -> dict[str, torch.Tensor]:
    return load_file(str(ref("w2vbert", "w2vbert.safetensors")))


@pytest.fixture(scope="module")
def model() -> W2VBert:
    return W2VBert.from_pretrained(ref("w2vbert", "w2v-bert-2.0"))


@pytest.fixture(scope="module")
def encoder() -> SemanticEncoder:
    return SemanticEncoder.from_files(ref("w2vbert", "w2v-bert-2.0"), ref("w2vbert", "wav2vec2bert_stats.pt"))


def _close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.float() - want.float()).abs().max().item()
    assert err <= ATOL, f"{name}: max abs error {err:.3g} > {ATOL}"


def _inputs(goldens: dict[str, torch.Tensor], case: str) -> tuple[torch.Tensor, torch.Tensor]:
    mask = goldens[f"{case}.attention_mask"]
    assert mask.dtype == torch.int64
    return goldens[f"{case}.input_features"], mask


def test_config_matches_golden(model: W2VBert) -> None:
    facts = _facts()
    cfg = facts["config_json"]
    assert facts["hidden_layer"] == SEMANTIC_LAYER
    assert model.config.hidden_size == cfg["hidden_size"]
    assert model.num_layers == cfg["num_hidden_layers"]
    assert model.config.left_max_position_embeddings == cfg["left_max_position_embeddings"]
    assert model.config.right_max_position_embeddings == cfg["right_max_position_embeddings"]
    want = {k: tuple(v) for k, v in facts["model_safetensors_keys"].items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want


@pytest.mark.parametrize("case", CASES)
def test_all_hidden_states(model: W2VBert, goldens: dict[str, torch.Tensor], case: str) -> None:
    feats, mask = _inputs(goldens, case)
    captured: dict[str, torch.Tensor] = {}
    layer0 = model.encoder.layers[0]
    hooks = [
        getattr(layer0, part).register_forward_hook(lambda _m, _i, out, part=part: captured.__setitem__(part, out))
        for part in LAYER0_PARTS
    ]
    try:
        out = model.all_hidden_states(feats, mask)
    finally:
        for hook in hooks:
            hook.remove()

    checked = {f"{case}.input_features", f"{case}.attention_mask"}
    _close("extract_features", out.extract_features, goldens[f"{case}.extract_features"])
    checked.add(f"{case}.extract_features")
    n_golden = sum(1 for k in goldens if k.startswith(f"{case}.hidden_states."))
    assert len(out.hidden_states) == n_golden == model.num_layers + 1
    for i, state in enumerate(out.hidden_states):
        _close(f"hidden_states.{i}", state, goldens[f"{case}.hidden_states.{i}"])
        checked.add(f"{case}.hidden_states.{i}")
    for part in LAYER0_PARTS:
        _close(f"layer0.{part}", captured[part], goldens[f"{case}.layer0.{part}"])
        checked.add(f"{case}.layer0.{part}")
    checked.add(f"{case}.feat_normalized")  # test_semantic_features
    assert {k for k in goldens if k.startswith(f"{case}.")} == checked, "golden tensors this test does not know"


@pytest.mark.parametrize("case", CASES)
def test_forward_stops_at_requested_layer(model: W2VBert, goldens: dict[str, torch.Tensor], case: str) -> None:
    feats, mask = _inputs(goldens, case)
    for layer in (0, 1, SEMANTIC_LAYER):
        got = model(feats, mask, output_layer=layer)
        _close(f"forward(output_layer={layer})", got, goldens[f"{case}.hidden_states.{layer}"])
    calls: list[int] = []
    hooks = [layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
             for i, layer in enumerate(model.encoder.layers)]
    try:
        model(feats, mask, output_layer=SEMANTIC_LAYER)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == list(range(SEMANTIC_LAYER))
    with pytest.raises(ValueError, match="output_layer"):
        model(feats, mask, output_layer=model.num_layers + 1)


@pytest.mark.parametrize("case", CASES)
def test_semantic_features(encoder: SemanticEncoder, goldens: dict[str, torch.Tensor], case: str) -> None:
    feats, mask = _inputs(goldens, case)
    assert encoder.model.num_layers == SEMANTIC_LAYER  # layers after 17 are dropped
    _close("feat_normalized", encoder.embed(feats, mask), goldens[f"{case}.feat_normalized"])


@pytest.mark.parametrize("case", CASES)
def test_trailing_padding_is_ignored(encoder: SemanticEncoder, goldens: dict[str, torch.Tensor], case: str) -> None:
    """Rows with mask 0 appended after a clip leave its features unchanged (keys masked, conv causal); the
    same rows unmasked do change them, so the mask is really applied."""
    feats, mask = _inputs(goldens, case)
    junk = torch.full((1, 7, feats.shape[-1]), 3.0)
    padded_feats = torch.cat([feats, junk], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 7, dtype=mask.dtype)], dim=1)
    want = goldens[f"{case}.feat_normalized"]
    got = encoder.embed(padded_feats, padded_mask)[:, : feats.shape[1]]
    _close("feat_normalized with trailing padding", got, want)
    unmasked = encoder.embed(padded_feats, torch.ones_like(padded_mask))[:, : feats.shape[1]]
    assert (unmasked - want).abs().max().item() > 100 * ATOL, "the attention mask has no effect"


# ---- strict loading ---------------------------------------------------------------------------------------


def _copy_model_dir(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    target = tmp_path / "w2v-bert-2.0"
    shutil.copytree(ref("w2vbert", "w2v-bert-2.0"), target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target, load_file(str(target / "model.safetensors"))


def _refuses(directory: Path, *needles: str) -> None:
    with pytest.raises(CheckpointError) as info:
        W2VBert.from_pretrained(directory)
    message = str(info.value)
    for needle in (str(directory / "model.safetensors"), *needles):
        assert needle in message, f"{needle!r} not in {message!r}"


def test_refuses_missing_key(tmp_path: Path) -> None:
    directory, state = _copy_model_dir(tmp_path)
    key = "encoder.layers.0.self_attn.distance_embedding.weight"
    del state[key]
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _refuses(directory, "missing", key)


def test_refuses_extra_key(tmp_path: Path) -> None:
    directory, state = _copy_model_dir(tmp_path)
    state["encoder.layer_norm.weight"] = torch.ones(state["masked_spec_embed"].shape)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _refuses(directory, "unexpected", "encoder.layer_norm.weight")


def test_refuses_misshaped_key(tmp_path: Path) -> None:
    directory, state = _copy_model_dir(tmp_path)
    key = "encoder.layers.1.conv_module.depthwise_conv.weight"
    state[key] = state[key][..., :-1].contiguous()
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    _refuses(directory, "shape", key)


def test_refuses_missing_folder_and_unsupported_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        W2VBert.from_pretrained(tmp_path / "nowhere")
    directory, _ = _copy_model_dir(tmp_path)
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["position_embeddings_type"] = "rotary"
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(CheckpointError) as info:
        W2VBert.from_pretrained(directory)
    assert str(cfg_path) in str(info.value) and "position_embeddings_type" in str(info.value)


def test_refuses_bad_stats(tmp_path: Path) -> None:
    hidden = _facts()["config_json"]["hidden_size"]
    bad = tmp_path / "wav2vec2bert_stats.pt"
    torch.save({"mean": torch.zeros(hidden + 1), "var": torch.ones(hidden + 1)}, bad)
    with pytest.raises(CheckpointError) as info:
        SemanticEncoder.from_files(ref("w2vbert", "w2v-bert-2.0"), bad)
    assert str(bad) in str(info.value) and "mean" in str(info.value)
    torch.save({"mean": torch.zeros(hidden)}, bad)
    with pytest.raises(CheckpointError, match="'var'"):
        SemanticEncoder.from_files(ref("w2vbert", "w2v-bert-2.0"), bad)
