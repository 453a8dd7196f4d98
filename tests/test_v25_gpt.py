"""IndexTTS-2.5 GPT (UnifiedVoice in campplus mode): parity with the goldens in <reference>/v2_5/gpt."""

from __future__ import annotations

import json
import re

import pytest
import torch
from reference import ref
from safetensors.torch import load_file
from test_gpt import _case_settings, assert_close, check_decode, check_emovec_intermediates

from core.checkpoints import CheckpointError
from core.config import GPTConfig, load_config
from core.gpt import DecodeTrace, UnifiedVoice
from core.gpt.emotion import EmotionMatrices, blend_emovec, normalize_emo_vec, scale_emo_weights
from core.gpt.generate import generate
from core.gpt.model import CAMPPLUS_DIM, FAKE_PROMPT_ID, LANG_ROWS, conditioning_widths
from core.text.v25 import gpt_view
from core.text.v25_vocab import LANGUAGE_CODES

TEXT_INPUTS = ("text_short", "text_medium")  # meta.json texts[i] -> inputs.safetensors tensor
LANG_INPUTS = ("lang_short", "lang_medium")


@pytest.fixture(scope="module")
def cfg():
    return load_config(ref("v2_5", "gpt", "config.yaml"))


@pytest.fixture(scope="module")
def model(cfg):
    return UnifiedVoice.from_checkpoint(ref("v2_5", "gpt", cfg.gpt_checkpoint), cfg.gpt, campplus=True)


@pytest.fixture(scope="module")
def meta():
    return json.loads(ref("v2_5", "gpt", "meta.json").read_text(encoding="utf-8"))


def _golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(ref("v2_5", "gpt", f"{name}.safetensors")))


@pytest.fixture(scope="module")
def inputs():
    return _golden("inputs")


@pytest.fixture(scope="module")
def gen():
    return _golden("generation")


def _text(meta, inputs, index: int) -> tuple[list[int], int]:
    """(ids as infer_v2_5 hands them to the GPT, lang_embedding row) of meta.json texts[index]."""
    info = meta["texts"][index]
    ids = inputs[TEXT_INPUTS[index]][0].tolist()
    assert ids == info["ids_with_trailing_1"] and len(ids) == info["len"]
    lang = int(inputs[LANG_INPUTS[index]][0])
    assert lang == info["lang_index"] == LANGUAGE_CODES.index(info["lang"].lower())
    return ids, lang


def _case(model, meta, inputs, gen, case: str):
    ids, lang = _text(meta, inputs, meta["generation"][case]["text"])
    emovec = gen.get(f"{case}.emovec", gen["greedy.emovec"])
    return ids, model.campplus_latent(inputs["style"]), emovec, lang


# ------------------------------------------------------------------------------------------------ conditioning
def test_speaker_latent(model, inputs, gen):
    golden = _golden("conditioning")
    latent = model.campplus_latent(inputs["style"])
    assert_close("spk_emb_proj_out", latent[0], golden["spk_emb_proj_out"])
    assert_close("speech_conditioning_latent", latent, gen["greedy.speech_conditioning_latent"])


@pytest.mark.parametrize("prefix,feature", [("emo.", "emo_cond_emb"), ("base.", "spk_cond_emb")])
def test_emotion_conditioning_intermediates(model, inputs, prefix, feature):
    check_emovec_intermediates(model, inputs[feature], _golden("conditioning"), prefix)


def test_merge_emovec_every_alpha(model, inputs, gen):
    golden = _golden("conditioning")
    names = [k for k in golden if k.startswith("merge_emovec.alpha_")]
    assert names
    for name in names:
        alpha = float(name.split("alpha_", 1)[1])
        assert_close(name, model.merge_emovec(inputs["spk_cond_emb"], inputs["emo_cond_emb"], alpha), golden[name])
    assert any(torch.equal(gen["greedy.emovec"], golden[n]) for n in names)  # the decodes use one of them


def test_emotion_vector_mode(cfg, meta, model, inputs):
    golden = _golden("emo_vector")
    info = meta["emo_vector_mode"]
    normalized = normalize_emo_vec(info["raw"])
    assert torch.equal(torch.tensor(normalized, dtype=torch.float32), golden["weights.normalized"])
    scaled = scale_emo_weights(normalized, info["emo_alpha"])
    assert scaled == info["alpha_scaled_truncated"]
    assert torch.equal(golden["style"], inputs["style"])
    for which, folder in (("real", ("data",)), ("tiny", ("v2_5", "gpt"))):
        mats = EmotionMatrices.load(ref(*folder, cfg.spk_matrix), ref(*folder, cfg.emo_matrix), cfg.emo_num)
        assert_close(f"{which}.cosine_similarities", mats.cosine_similarities(golden["style"]),
                     golden[f"{which}.cosine_similarities"])
        assert mats.select(golden["style"]) == golden[f"{which}.indices_in_group"].tolist()
        emovec_mat, weight_sum = mats.mix(scaled, golden["style"])
        assert_close(f"{which}.emovec_mat", emovec_mat, golden[f"{which}.emovec_mat"])
        out = blend_emovec(emovec_mat, weight_sum, golden[f"{which}.emovec_in"])
        assert_close(f"{which}.emovec_out", out, golden[f"{which}.emovec_out"])
    merged = model.merge_emovec(inputs["spk_cond_emb"], inputs["emo_cond_emb"], 1.0)
    assert_close("tiny.emovec_in", merged, golden["tiny.emovec_in"])


# ---------------------------------------------------------------------------------------------------- prompt
def test_prompt_layout(model, meta, inputs, gen):
    """[masked zero rows | latent + emovec, 0, 0 | text rows + lang row]; our prompt leaves the masked rows out."""
    ids, spk, emovec, lang = _case(model, meta, inputs, gen, "greedy")
    info = meta["generation"]["greedy"]
    view, pad = gpt_view(ids)
    assert view == info["gpt_text_ids"] and pad == info["prompt_left_pad_rows"] == meta["texts"][0]["n_dropped_0_1"]
    cached = gen["greedy.cached_mel_emb"]
    assert cached.shape[1] == info["prompt_len_without_start"]
    assert bool((cached[0, :pad] == 0).all())
    mask = gen["greedy.prompt_attention_mask"][0]
    assert mask[:pad].tolist() == [0] * pad and bool((mask[pad:] == 1).all())
    fake = gen["greedy.prompt_input_ids"][0]
    assert bool((fake[:-1] == FAKE_PROMPT_ID).all()) and int(fake[-1]) == model.cfg.start_mel_token
    conds = model.conds(spk, emovec)
    assert_close("greedy.conds_latent", conds, gen["greedy.conds_latent"])
    assert bool((conds[0, 1:] == 0).all())
    prompt = model.prompt_embedding(ids, spk, emovec, lang)
    assert_close("greedy.cached_mel_emb (unmasked rows)", prompt, cached[:, pad:])
    assert_close("greedy.text_rows_embedding", prompt[:, conds.shape[1] :], gen["greedy.text_rows_embedding"])
    # every row of the text carries the language row: another language changes every text row, no cond row
    other = model.prompt_embedding(ids, spk, emovec, (lang + 1) % LANG_ROWS)
    assert torch.equal(other[:, : conds.shape[1]], prompt[:, : conds.shape[1]])
    assert bool((other[0, conds.shape[1] :] != prompt[0, conds.shape[1] :]).any(dim=-1).all())


def test_every_generation_case_matches(model, meta, inputs, gen):
    """Greedy / greedy + repetition penalty / beam(3) / vector-mode codes token for token; logits and beam steps."""
    stop = model.cfg.stop_mel_token
    assert meta["generation"]
    for case, info in meta["generation"].items():
        ids, spk, emovec, lang = _case(model, meta, inputs, gen, case)
        trace = DecodeTrace()
        codes, hit_max = generate(model, ids, spk, emovec, _case_settings(info, model.cfg.max_mel_tokens),
                                  trace=trace, lang=lang)
        assert gen[f"{case}.codes"][0].tolist() == info["codes"]
        check_decode(case, codes, hit_max, trace, gen, stop)
        if "steps_run" in info:
            assert len(trace.top_tokens) == info["steps_run"]


def test_uncached_pass_with_decode_positions(model, meta, inputs, gen):
    """One uncached pass over [prompt; 8192, codes] at the decode positions gives the cached step logits."""
    ids, spk, emovec, lang = _case(model, meta, inputs, gen, "greedy")
    codes = gen["greedy.codes"][0]
    positions = gen["tf.mel_positions"].tolist()
    n = len(positions)
    assert positions == [0] + list(range(2, n + 1))
    tokens = torch.cat([torch.tensor([model.cfg.start_mel_token]), codes[: n - 1]])
    mel = model.mel_embedding(tokens) + model.mel_pos_embedding.emb.weight[positions]
    with torch.inference_mode():
        emb = torch.cat([model.prompt_embedding(ids, spk, emovec, lang), mel.unsqueeze(0)], dim=1)
        logits = model.mel_logits(model.gpt(emb)[:, -n:])[0]
    want = gen["tf.step_logits_uncached_without_pad_rows"]
    assert (logits - want).abs().max() <= 5e-4
    assert (want - gen["greedy.step_logits"]).abs().max() <= 5e-4


# ----------------------------------------------------------------------------------------------- checkpoints
def test_tiny_checkpoint_key_set(model, meta):
    """Our campplus model's state dict has exactly the golden gpt.pth's keys and shapes (flat, no wrapper)."""
    info = meta["gpt_pth"]
    keys = {k: tuple(s) for k, s in info["keys"]}
    assert len(keys) == info["n_tensors"]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == keys
    absent = [p.rstrip("*") for p in info["absent_in_campplus_mode"]]
    assert not any(k.startswith(tuple(absent)) for k in keys)
    assert keys["spk_emb_proj.weight"] == (model.cfg.model_dim, CAMPPLUS_DIM)
    assert keys["lang_embedding.weight"] == (LANG_ROWS, model.cfg.model_dim)


def test_released_key_set(meta, cfg):
    """At the released configuration (the 2.0 release's, with the 2.5 vocabulary) on the meta device: 456 keys,
    named as the golden gpt.pth with the release's layer and block counts, shaped as the 2.0 release implies for
    every shared key, and with the 2.5 rows for text, speaker projection and languages."""
    released_2 = load_config(ref("data", "config.yaml")).gpt
    assert released_2 is not None
    released = GPTConfig(**{**vars(released_2), "number_text_tokens": cfg.gpt.number_text_tokens})
    full2 = json.loads(ref("fullsize", "gpt.json").read_text(encoding="utf-8"))
    state2 = {k: torch.empty(shape, device="meta") for k, (shape, _) in full2.items()}
    with torch.device("meta"):
        model = UnifiedVoice(released, *conditioning_widths(state2, released), campplus=True)
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # names: the tiny file's, with every block index of the release
    counts = {r"gpt\.h\.(\d+)\.": released.layers, r"emo_conditioning_encoder\.encoders\.(\d+)\.":
              released.emo_condition_module.num_blocks}
    names: set[str] = set()
    for key, _ in meta["gpt_pth"]["keys"]:
        for pattern, n in counts.items():
            if m := re.search(pattern, key):
                if m.group(1) == "0":
                    names.update(key[: m.start(1)] + str(i) + key[m.end(1) :] for i in range(n))
                break
        else:
            names.add(key)
    assert set(have) == names
    assert len(have) == 456
    dim, rows = released.model_dim, released.number_text_tokens + 1
    new = {"spk_emb_proj.weight": (dim, CAMPPLUS_DIM), "spk_emb_proj.bias": (dim,),
           "lang_embedding.weight": (LANG_ROWS, dim), "text_embedding.weight": (rows, dim),
           "text_head.weight": (rows, dim), "text_head.bias": (rows,)}
    for key, shape in have.items():
        assert shape == (new[key] if key in new else tuple(full2[key][0])), key


def test_loading_is_strict_about_the_mode(cfg, tmp_path):
    path = ref("v2_5", "gpt", cfg.gpt_checkpoint)
    with pytest.raises(CheckpointError, match="spk_emb_proj"):
        UnifiedVoice.from_checkpoint(path, cfg.gpt)  # a 2.5 file is not a 2.0 GPT
    state = torch.load(path, map_location="cpu", weights_only=True)
    del state["lang_embedding.weight"]
    torch.save(state, tmp_path / "gpt.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: lang_embedding\.weight"):
        UnifiedVoice.from_checkpoint(tmp_path / "gpt.pth", cfg.gpt, campplus=True)
