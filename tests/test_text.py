"""Text front end: parity with upstream IndexTTS-2 on every record of ``text/text_goldens.jsonl``, plus bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reference import ref

from core.text import GlossaryError, GrammarError, TextError, TextFrontend, TokenizerError, fst, split_cjk
from core.text.normalizer import TextNormalizer

log = logging.getLogger(__name__)

RECORDS = [
    json.loads(line) for line in ref("text", "text_goldens.jsonl").read_text(encoding="utf-8").splitlines() if line
]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend(ref("data", "bpe.model"))


_PLACEHOLDER = re.compile(r"<(pinyin|n)_(.)>")


def relabel(text: str) -> str:
    """Name the <pinyin_x>/<n_x> placeholders a, b, ... in order of first appearance, as the goldens do."""
    seen: dict[tuple[str, str], str] = {}

    def sub(m: re.Match) -> str:
        key = (m.group(1), m.group(2))
        if key not in seen:
            seen[key] = chr(ord("a") + sum(1 for kind, _ in seen if kind == key[0]))
        return f"<{key[0]}_{seen[key]}>"

    return _PLACEHOLDER.sub(sub, text)


def test_golden_set_is_not_empty():
    assert len(RECORDS) > 0
    assert all("id" in r and "tokens" in r and "segments" in r for r in RECORDS)


@pytest.mark.parametrize("rec", RECORDS, ids=[r["id"] for r in RECORDS])
def test_record_parity(fe: TextFrontend, rec: dict):
    text = rec["input"]
    if rec["path"] == "normalized":
        lang, grammar_input = fe.normalizer.grammar_input(text)
        assert lang == rec["lang"]
        if rec["fst_input"] is not None:
            assert relabel(grammar_input) == rec["fst_input"]
        if rec["fst_output"] is not None:
            # The grammar alone, on exactly the golden grammar input.
            assert fst.grammar(lang).normalize(rec["fst_input"]) == rec["fst_output"]
        assert fe.normalize(text) == rec["normalized"]
        assert split_cjk(rec["normalized"]) == rec["pretokenized"]
    # SentencePiece alone, on exactly the golden SentencePiece input.
    if rec["sp_input"] is not None:
        assert fe.bpe.encode_pieces(rec["sp_input"]) == rec["tokens"]
    tokens = fe.tokenize(text)
    assert tokens == rec["tokens"]
    assert fe.convert_tokens_to_ids(tokens) == rec["ids"]
    assert len(tokens) == rec["n_tokens"]
    assert sum(i == fe.unk_id for i in rec["ids"]) == rec["n_unk"]
    assert rec["segments"], "record lists no segment limits"
    for max_tokens, expected in rec["segments"].items():
        segments = fe.split_segments(tokens, int(max_tokens), quick_streaming_tokens=0)
        assert segments == expected["pieces"], f"max_text_tokens_per_segment={max_tokens}"
        assert [fe.convert_tokens_to_ids(s) for s in segments] == expected["ids"]
    first_max, first = next(iter(rec["segments"].items()))
    assert fe.segments(text, int(first_max)) == first["pieces"]  # the convenience call, end to end


def test_empty_text(fe: TextFrontend):
    assert fe.normalize("") == ""
    assert fe.tokenize("") == []
    assert fe.convert_tokens_to_ids([]) == []
    assert fe.segments("") == []
    assert fe.split_segments([]) == []


@pytest.mark.parametrize("text", ["   ", "\n\t \n", "\u3000\u3000", " \u00a0 "])
def test_whitespace_only(fe: TextFrontend, text: str):
    assert fe.normalize(text).strip() == ""
    assert fe.tokenize(text) == []
    assert fe.segments(text) == []


def test_only_punctuation(fe: TextFrontend):
    assert fe.normalize("！？。，") == "!?.,"
    tokens = fe.tokenize("！？。，")
    assert tokens == ["▁", "!", "?", ".", ","]
    assert fe.unk_id not in fe.convert_tokens_to_ids(tokens)
    assert fe.segments("！？。，") == [tokens]
    assert fe.tokenize("...") == ["▁", "..."]


@pytest.mark.parametrize("text", ["😀🎉", "😀", " 😀 ", "🎉！🎉"])
def test_only_emoji(fe: TextFrontend, text: str):
    tokens = fe.tokenize(text)
    ids = fe.convert_tokens_to_ids(tokens)
    assert tokens and tokens[0] == "▁"
    assert fe.unk_id in ids  # emoji are not in the vocabulary
    assert all(0 <= i < fe.vocab_size for i in ids)
    assert [t for s in fe.segments(text) for t in s] == tokens


def test_utf16_surrogate_pairs_are_joined_and_lone_ones_rejected(fe: TextFrontend):
    assert fe.tokenize("\ud83d\ude00好") == fe.tokenize("😀好")
    with pytest.raises(TextError, match="surrogate"):
        fe.tokenize("ab\ud800cd")
    with pytest.raises(TextError, match="must be a str"):
        fe.tokenize(b"bytes")  # type: ignore[arg-type]


def test_100k_characters(fe: TextFrontend):
    """A 100k-character text (golden inputs, Chinese grammar) is processed piecewise in reasonable time."""
    sources = [r["input"] for r in RECORDS if r["lang"] == "zh" and len(r["input"]) > 10]
    parts: list[str] = []
    while sum(map(len, parts)) < 100_000:
        parts.extend(sources)
    text = "".join(parts)[:100_000]
    start = time.perf_counter()
    tokens = fe.tokenize(text)
    tokenize_s = time.perf_counter() - start
    segments = fe.split_segments(tokens, 120)
    total_s = time.perf_counter() - start
    log.warning("100k characters: tokenize %.1f s, %d tokens, %d segments, total %.1f s", tokenize_s, len(tokens),
                len(segments), total_s)
    assert len(tokens) > 50_000
    assert all(0 < len(s) <= 121 for s in segments)
    assert sum(map(len, segments)) >= len(tokens)
    assert total_s < 300, f"100k characters took {total_s:.0f} s"


def test_long_text_split_keeps_every_character():
    zh = "".join(r["input"] for r in RECORDS if r["lang"] == "zh") * 3
    en = " ".join(r["input"] for r in RECORDS if r["lang"] == "en") * 3
    for lang, text in (("zh", zh), ("en", en), ("zh", "好" * 5000), ("en", "x" * 5000)):
        pieces = fst.split_for_grammar(text, lang)
        assert "".join(p + gap for p, gap in pieces) == text
        assert all(len(p) <= max(fst.CHUNK_CHARS, fst.HARD_CHUNK_CHARS) for p, _ in pieces)
        assert len(pieces) > 1


def test_golden_texts_are_normalised_in_one_pass():
    """Parity holds because golden texts are shorter than the piecewise threshold (see core/text/fst.py)."""
    longest = max(len(r["fst_input"] or "") for r in RECORDS)
    assert longest <= fst.LONG_TEXT_CHARS


def test_grammars_are_loaded_once(fe: TextFrontend):
    fe.load_grammars()
    assert fst.grammar("zh") is fst.grammar("zh")
    assert fst.grammar("en") is fst.grammar("en")
    with pytest.raises(ValueError, match="unknown grammar language"):
        fst.grammar("fr")


def test_missing_or_corrupt_grammar(tmp_path: Path):
    with pytest.raises(GrammarError, match="missing"):
        fst.grammar("zh", tmp_path)
    (tmp_path / "zh_tn_tagger.fst").write_bytes(b"not an fst at all")
    (tmp_path / "zh_tn_verbalizer.fst").write_bytes(b"")
    with pytest.raises(GrammarError, match="corrupt"):
        fst.grammar("zh", tmp_path)
    good = fst.FST_DIR / "zh_tn_verbalizer.fst"
    (tmp_path / "zh_tn_tagger.fst").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(GrammarError, match="corrupt"):
        fst.grammar("zh", tmp_path)


def test_missing_or_corrupt_bpe_model(tmp_path: Path):
    with pytest.raises(TokenizerError, match="does not exist"):
        TextFrontend(tmp_path / "bpe.model")
    (tmp_path / "bpe.model").write_bytes(b"\x00garbage")
    with pytest.raises(TokenizerError, match="corrupt"):
        TextFrontend(tmp_path / "bpe.model")


def test_bad_segment_limits(fe: TextFrontend):
    tokens = fe.tokenize("你好，世界。")
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_text_tokens_per_segment"):
            fe.split_segments(tokens, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quick_streaming_tokens"):
        fe.split_segments(tokens, 20, quick_streaming_tokens=-1)


def test_glossary(tmp_path: Path):
    path = tmp_path / "glossary.yaml"
    path.write_text("C++:\n  en: C plus plus\n  zh: C 加加\nTTS: T T S\nPCIe:\n  zh: PCIE\n", encoding="utf-8")
    fe = TextFrontend(ref("data", "bpe.model"), glossary_path=path)
    assert fe.normalizer.apply_glossary("I like c++ and tts on PCIe", "en") == "I like C plus plus and T T S on PCIe"
    assert fe.normalizer.apply_glossary("我用C++写TTS", "zh") == "我用C 加加写T T S"
    assert fe.normalize("我用C++写TTS。") == "我用C 加加写T T S."
    # Longest term first, each term over the whole text in turn (upstream): the later, shorter term also
    # rewrites the output of the longer one.
    longest_first = TextNormalizer({"SSD": "S S D", "NVMe SSD": "drive"})
    assert longest_first.apply_glossary("nvme ssd and SSD", "en") == "drive and S S D"
    sequential = TextNormalizer({"PCIe": "P", "PCIe 5.0": "PCIE five"})
    assert sequential.apply_glossary("PCIe 5.0 and PCIe", "en") == "P five and P"


def test_bad_glossary(tmp_path: Path):
    with pytest.raises(GlossaryError, match="does not exist"):
        TextFrontend(ref("data", "bpe.model"), glossary_path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match="mapping"):
        TextFrontend(ref("data", "bpe.model"), glossary_path=bad)
    bad.write_text("key: [unclosed\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match="cannot read"):
        TextFrontend(ref("data", "bpe.model"), glossary_path=bad)


def test_import_core_text_loads_no_gui():
    code = (
        "import sys, core, core.text; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tkinter', '_tkinter', 'desktop')]; "
        "assert not bad, bad; "
        "core.text.TextFrontend(sys.argv[1]); "
        "assert not core.text.fst._cache, 'grammars must load lazily'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(ref("data", "bpe.model"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
