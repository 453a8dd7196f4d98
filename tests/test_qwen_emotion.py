"""QwenEmotion against the qwen_emotion goldens: upstream parsing cases, chat template renders, tiny Qwen3 forward."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from reference import ref
from safetensors.torch import load_file, save_file

from core.checkpoints import CheckpointError
from core.qwen_emotion import (
    EMOTION_KEYS_EN,
    Qwen3ForCausalLM,
    QwenEmotion,
    parse_emotion_output,
    render_chat_template,
    strip_thinking,
)

ATOL = RTOL = 1e-4  # README: logits / step logits (f32); generated tokens exact
VALUE_TOL = 1e-12  # README: parsed values are Python floats


def _json(*parts: str) -> Any:
    return json.loads(ref("qwen_emotion", *parts).read_text(encoding="utf-8"))


PARSING = _json("parsing_cases.json")
CASES = PARSING["cases"]
RENDERS = _json("chat_template", "renders.json")["cases"]
CASE_IDS = [f"{c['id']}-{c['category']}" for c in CASES]


def _template() -> str:
    return ref("qwen_emotion", "chat_template", "qwen3_chat_template.jinja").read_text(encoding="utf-8")


def _check_result(case: dict[str, Any], run) -> None:
    if "error" in case:
        with pytest.raises(Exception) as info:
            run()
        assert type(info.value).__name__ == case["error"]["type"], f"raised {info.value!r}"
        return
    got = run()
    want = case["result"]
    assert list(got) == list(want) == PARSING["output_order"]
    for key, value in want.items():
        assert isinstance(got[key], float)
        assert abs(got[key] - value) <= VALUE_TOL, f"{key}: {got[key]} != {value}"


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_parsing_case(case: dict[str, Any]) -> None:
    _check_result(case, lambda: parse_emotion_output(case["decoded_content"], case["text_input"]))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_think_stripping(case: dict[str, Any]) -> None:
    ids = case["generated_ids_after_prompt"]
    assert strip_thinking(ids) == ids[case["decoded_from_index"] :]


class _StubTokenizer:
    """Decodes ids through the golden's decode table, as the golden generator's stub did."""

    def __init__(self, case: dict[str, Any]) -> None:
        self.table: dict[int, tuple[str, bool]] = {}
        for key, text in PARSING["stub_generation"]["decode_table"].items():
            special = "(special" in text
            if text == "<the case's model_output>":
                text = case["model_output"]
            elif special:
                text = text.split(" (")[0]
            self.table[int(key)] = (text, special)
        self.prompts: list[str] = []

    def encode(self, text: str) -> list[int]:
        self.prompts.append(text)
        return list(PARSING["stub_generation"]["prompt_ids"])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(t for t, special in (self.table[i] for i in ids) if not (special and skip_special_tokens))


class _StubModel:
    def __init__(self, new_ids: list[int]) -> None:
        self.new_ids = new_ids
        self.calls: list[tuple[list[int], list[int]]] = []

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, eos_token_ids: Sequence[int]) -> list[int]:
        self.calls.append((list(prompt_ids), list(eos_token_ids)))
        return list(self.new_ids)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inference_pipeline_with_stub_model(case: dict[str, Any]) -> None:
    """Prompt rendering, </think> stripping, decoding and parsing inside QwenEmotion.inference/vector."""
    tok = _StubTokenizer(case)
    model = _StubModel(case["generated_ids_after_prompt"])
    eos = PARSING["chat_call"]["generate_kwargs"]["pad_token_id"]
    qe = QwenEmotion(model, tok, _template(), eos_token_ids=[eos])
    assert qe.answer(case["text_input"]) == case["decoded_content"]
    assert tok.prompts == [case["chat_prompt"]]
    assert model.calls == [(PARSING["stub_generation"]["prompt_ids"], [eos])]
    _check_result(case, lambda: qe.inference(case["text_input"]))
    if "result_vector" in case:
        assert qe.vector(case["text_input"]) == pytest.approx(case["result_vector"], abs=VALUE_TOL)


# ------------------------------------------------------------------------------------------------ chat template


@pytest.mark.parametrize("case", RENDERS, ids=[str(i) for i in range(len(RENDERS))])
def test_chat_template_render(case: dict[str, Any]) -> None:
    rendered = render_chat_template(
        _template(), case["messages"], add_generation_prompt=case["add_generation_prompt"],
        enable_thinking=case["enable_thinking"],
    )
    assert rendered == case["rendered"]


# ------------------------------------------------------------------------------------------------ tiny Qwen3


@pytest.fixture(scope="module")
def tiny() -> Qwen3ForCausalLM:
    return Qwen3ForCausalLM.from_pretrained(ref("qwen_emotion", "tiny_qwen3"))


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(ref("qwen_emotion", "model_golden.safetensors")))


def test_config_from_file(tiny: Qwen3ForCausalLM) -> None:
    cfg = _json("tiny_qwen3", "config.json")
    assert tiny.cfg.hidden_size == cfg["hidden_size"]
    assert tiny.cfg.num_key_value_heads == cfg["num_key_value_heads"]
    assert tiny.cfg.head_dim == cfg["head_dim"]
    assert tiny.cfg.rope_theta == cfg["rope_theta"]
    assert hasattr(tiny, "lm_head") != cfg["tie_word_embeddings"]
    assert len(tiny.model.layers) == cfg["num_hidden_layers"]


def test_full_forward_logits(tiny: Qwen3ForCausalLM, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        logits = tiny(golden["input_ids"])
    torch.testing.assert_close(logits, golden["logits"], atol=ATOL, rtol=RTOL)


def test_greedy_generation_with_cache(tiny: Qwen3ForCausalLM, golden: dict[str, torch.Tensor]) -> None:
    facts = _json("model_golden.json")
    steps: list[torch.Tensor] = []
    new = tiny.generate(
        golden["gen_prompt_ids"][0].tolist(), max_new_tokens=facts["max_new_tokens"],
        eos_token_ids=[facts["eos_token_id"]], on_step=lambda logits: steps.append(logits.clone()),
    )
    assert new == golden["gen_new_tokens"][0].tolist()
    assert golden["gen_prompt_ids"][0].tolist() + new == golden["gen_sequence"][0].tolist()
    assert (new[-1] == facts["eos_token_id"]) == facts["stopped_on_eos"]
    torch.testing.assert_close(torch.stack(steps)[None], golden["gen_step_logits"], atol=ATOL, rtol=RTOL)


def test_cached_prefill_in_chunks_matches_full_forward(tiny: Qwen3ForCausalLM, golden: dict[str, torch.Tensor]) -> None:
    """A cache fed in two chunks (masked attention over past + new) gives the full forward's logits."""
    from core.qwen_emotion import KVCache

    ids = golden["input_ids"]
    cut = ids.shape[1] // 3
    cache = KVCache(len(tiny.model.layers))
    with torch.no_grad():
        first = tiny(ids[:, :cut], cache)
        second = tiny(ids[:, cut:], cache)
    torch.testing.assert_close(torch.cat([first, second], 1), golden["logits"], atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------------------------------ loading


def _tiny_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "qwen"
    shutil.copytree(ref("qwen_emotion", "tiny_qwen3"), folder)
    return folder


def test_missing_weight_is_refused(tmp_path: Path) -> None:
    folder = _tiny_copy(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.layers.1.self_attn.k_norm.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing keys: model\.layers\.1\.self_attn\.k_norm"):
        Qwen3ForCausalLM.from_pretrained(folder)


def test_misshaped_weight_is_refused(tmp_path: Path) -> None:
    folder = _tiny_copy(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["model.layers.0.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"][:-1].contiguous()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*wrong shapes: model\.layers\.0\.mlp\.up_proj"):
        Qwen3ForCausalLM.from_pretrained(folder)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="QwenEmotion model folder not found"):
        QwenEmotion.from_pretrained(tmp_path / "nowhere")
    folder = _tiny_copy(tmp_path)
    with pytest.raises(CheckpointError, match=r"Qwen tokenizer not found: .*tokenizer\.json"):
        QwenEmotion.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"Qwen3 weights not found in .*qwen"):
        Qwen3ForCausalLM.from_pretrained(folder)


def _byte_level_tokenizer(folder: Path, vocab_size: int, specials: dict[str, int]) -> None:
    """A byte-level tokenizer.json whose chat tokens sit at the given ids inside the tiny vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update(specials)
    assert max(vocab.values()) < vocab_size
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False)])
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<|im_end|>", special=True)])
    tok.save(str(folder / "tokenizer.json"))


def test_from_pretrained_end_to_end(tmp_path: Path, tiny: Qwen3ForCausalLM) -> None:
    """Real loading path: tokenizer.json + tokenizer_config.json chat template + tiny weights, greedy decoding."""
    folder = _tiny_copy(tmp_path)
    cfg = _json("tiny_qwen3", "config.json")
    eos = cfg["eos_token_id"]
    specials = {"<|im_start|>": eos - 1, "<|im_end|>": eos, "<think>": eos + 1, "</think>": eos + 2}
    _byte_level_tokenizer(folder, cfg["vocab_size"], specials)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": _template(), "eos_token": "<|im_end|>", "clean_up_tokenization_spaces": False}
    ), encoding="utf-8")
    qe = QwenEmotion.from_pretrained(folder)
    qe.max_new_tokens = 8
    assert qe.think_end_id == specials["</think>"]
    assert eos in qe.eos_token_ids
    for case in RENDERS:
        text = case["messages"][-1]["content"]
        prompt = qe.render_prompt(text)
        assert prompt == case["rendered"]
        ids = qe.tokenizer.encode(prompt)
        assert ids[0] == specials["<|im_start|>"] and specials["</think>"] in ids
        assert qe.tokenizer.decode(ids, skip_special_tokens=False) == prompt
        assert "<|im_start|>" not in qe.tokenizer.decode(ids) and "</think>" in qe.tokenizer.decode(ids)
        # greedy ids from the cached decoder equal argmax of repeated full forwards
        new = qe.model.generate(ids, max_new_tokens=qe.max_new_tokens, eos_token_ids=qe.eos_token_ids)
        seq = list(ids)
        with torch.no_grad():
            for _ in new:
                seq.append(int(tiny(torch.tensor([seq]))[0, -1].argmax()))
        assert new == seq[len(ids) :]
        scores = qe.inference(text)
        assert scores == parse_emotion_output(qe.tokenizer.decode(strip_thinking(new, qe.think_end_id)), text)
        assert list(scores) == list(EMOTION_KEYS_EN)
        assert qe.vector(text) == [scores[k] for k in EMOTION_KEYS_EN]
