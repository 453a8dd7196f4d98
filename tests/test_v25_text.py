"""IndexTTS-2.5 text front end: parity with upstream on every record of ``v2_5/text/text_goldens.jsonl``."""

from __future__ import annotations

import json
import logging

import pytest
from reference import ref

from core.text import TextError
from core.text.tokenizer import TokenizerError
from core.text.v25 import (
    DEFAULT_SEGMENT_TOKENS,
    SUPPORTED_LANGUAGES,
    V25TextFrontend,
    check_language,
    default_segment_tokens,
    gpt_view,
    guess_language,
    lang_prefix,
    segment_budget,
)
from core.text.v25_vocab import LANGUAGE_CODES, PATTERN, VOCAB_FILE, VOCAB_SHA256, lang_index, load_tokenizer

_LINES = ref("v2_5", "text", "text_goldens.jsonl").read_text(encoding="utf-8").splitlines()
ALL = [json.loads(line) for line in _LINES if line]
RECORDS = [r for r in ALL if r["category"] != "encode_only"]
ENCODE_ONLY = [r for r in ALL if r["category"] == "encode_only"]
META = json.loads(ref("v2_5", "text", "meta.json").read_text(encoding="utf-8"))
TABLES = json.loads(ref("v2_5", "text", "tiktoken_tables.json").read_text(encoding="utf-8"))
VOCAB = ref("v2_5", "data", VOCAB_FILE)
# Which normaliser the goldens record -> ours: the 2.0 normaliser, "nothing" (NeMo absent), none at all.
NORMALIZERS = {"TextNormalizer.normalize (WeTextProcessing zh/en)": "wetext", "nemo_tn.normalize_text": "none",
               None: None}


@pytest.fixture(scope="module")
def fe() -> V25TextFrontend:
    return V25TextFrontend(VOCAB)


def test_goldens_are_complete():
    assert len(RECORDS) == META["n_records"] and len(ENCODE_ONLY) == META["n_encode_only"]
    assert all(set(map(int, r["segments"])) == set(META["budgets"]) for r in RECORDS)
    assert META["nemo_text_processing_importable"] is False  # the goldens follow upstream's default install


def test_vocabulary_tables(fe: V25TextFrontend):
    from core.digest import sha256_file

    assert sha256_file(VOCAB) == TABLES["vocab_sha256"] == VOCAB_SHA256
    assert VOCAB.stat().st_size == TABLES["vocab_bytes"]
    tok = fe.tokenizer
    assert tok.n_ranks == TABLES["n_mergeable_ranks"]
    assert len(tok.specials) == TABLES["n_special_tokens"] and tok.n_vocab == TABLES["n_vocab"]
    assert [[k, v] for k, v in tok.specials.items()] == TABLES["special_tokens"]
    assert PATTERN == TABLES["pat_str"]
    assert {c: i for i, c in enumerate(LANGUAGE_CODES)} == TABLES["language_dict (lang_embedding row)"]
    assert len(LANGUAGE_CODES) < TABLES["lang_embedding_rows"]
    assert tok.token_bytes([0, 1]) == [TABLES["id0_bytes"].encode(), TABLES["id1_bytes"].encode()]


@pytest.mark.parametrize("rec", ENCODE_ONLY, ids=[r["id"] for r in ENCODE_ONLY])
def test_encode_only(fe: V25TextFrontend, rec: dict):
    ids = fe.tokenizer.encode(rec["input"])
    assert ids == rec["ids"]
    assert fe.tokenizer.pieces(ids) == rec["pieces"]


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_record_parity(fe: V25TextFrontend, rec: dict):
    lang = rec["lang"]
    trace = fe.prepare(rec["input"], lang, normalize=rec["text_normalization"])
    assert trace.after_char_map == rec["after_char_map"]
    assert trace.normalizer == NORMALIZERS[rec["normalizer"]]
    assert trace.normalized == rec["normalized"]
    assert trace.after_case == rec["after_case"]
    assert trace.after_annotations == rec["after_annotations"]
    assert trace.after_ja_word_split == rec["after_ja_word_split"]
    if rec["ja_input"] is not None:
        assert fe.japanese(rec["ja_input"]) == rec["after_ja_word_split"]
    assert trace.split_input == rec["split_input"]

    prefix = lang_prefix(lang)
    assert prefix == rec["lang_prefix"] and fe.tokenizer.encode(prefix) == rec["lang_prefix_ids"]
    assert lang_index(lang) == rec["lang_index"]
    for budget, expected in rec["segments"].items():
        where = f"max_text_tokens_per_segment={budget}"
        assert segment_budget(int(budget), prefix, fe.tokenizer) == expected["budget_tokens"], where
        segments = fe.split(trace.split_input, lang, int(budget))
        assert segments == expected["segments"], where
        encoded = [fe.encode_segment(s, lang) for s in segments]
        assert [e.ids for e in encoded] == expected["ids"], where
        assert [fe.tokenizer.pieces(e.ids) for e in encoded] == expected["pieces"], where
        views = [gpt_view(e.gpt_input) for e in encoded]
        assert [v[0] for v in views] == expected["gpt_text_ids"], where
        assert [v[1] for v in views] == expected["gpt_prompt_left_pad_rows"], where
    default = fe.segments(rec["input"], lang, 120, normalize=rec["text_normalization"])  # end to end
    assert sum(len(s.ids) for s in default) == rec["n_ids_default"]
    assert [s.ids for s in default] == rec["segments"]["120"]["ids"]
    assert sum(v[1] - 1 for v in map(gpt_view, (s.gpt_input for s in default))) == rec["dropped_ids_0_1_default"]
    assert sum(s.ignored_tokens for s in default) == rec["dropped_ids_0_1_default"]


def test_spanish_without_normaliser_says_so_once(caplog: pytest.LogCaptureFixture):
    import core.text.v25 as v25

    v25._warned_no_normalizer.discard("es")
    fe = V25TextFrontend(VOCAB)
    with caplog.at_level(logging.WARNING, logger="core.text.v25"):
        assert fe.prepare("Tengo 25 años", "ES").after_case == "TENGO 25 AÑOS"
        fe.prepare("Tengo 3", "es")
    assert [r.getMessage() for r in caplog.records if "Spanish" in r.getMessage()].__len__() == 1


def test_missing_and_corrupt_vocabulary(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist.*must contain"):
        load_tokenizer(tmp_path / VOCAB_FILE)
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot base64 at all 1\n", encoding="ascii")
    with pytest.raises(TokenizerError, match="line 2"):
        load_tokenizer(bad)
    gap = tmp_path / "gap.tiktoken"
    gap.write_text("IQ== 0\nIg== 2\n", encoding="ascii")
    with pytest.raises(TokenizerError, match="ranks are not"):
        load_tokenizer(gap)


def test_bad_text(fe: V25TextFrontend):
    with pytest.raises(TextError):
        fe.prepare(b"bytes", "en")  # type: ignore[arg-type]


def test_language_choices():
    assert [check_language(c.upper()) for c in SUPPORTED_LANGUAGES] == list(SUPPORTED_LANGUAGES)
    for bad in ("de", "", "zhen", None):
        with pytest.raises(TextError, match="unknown language"):
            check_language(bad)  # type: ignore[arg-type]
    assert set(DEFAULT_SEGMENT_TOKENS) == set(SUPPORTED_LANGUAGES)
    assert default_segment_tokens("EN") == DEFAULT_SEGMENT_TOKENS["en"] and default_segment_tokens("yue") == 120


def test_guess_language_from_script():
    """The language picker's default (our heuristic, not upstream's): kana, Arabic, Han, Spanish letters, else en."""
    cases = {"今日はとても良い天気ですね。": "ja", "東京に行きます。": "ja", "東京": "zh", "مرحبا بكم": "ar",
             "你好，世界": "zh", "¿Cómo estás?": "es", "Hello, world!": "en", "": "en", "Ich heiße Max": "en"}
    assert {text: guess_language(text) for text in cases} == cases
