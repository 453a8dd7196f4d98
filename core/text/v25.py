"""IndexTTS-2.5 text front end: text + language code -> segments of tiktoken ids, as ``infer_v2_5`` prepares them.

Order (each step is a field of :class:`V25Trace`):

1. character map of the 2.0 normaliser, for every language and BEFORE normalisation (``9:30`` -> ``9,30``);
2. normalisation: zh / zhen / en through the 2.0 normaliser; ja and es have none in upstream's default
   install (its NeMo normaliser is not installed; Spanish numbers stay digits, which is logged once); others none;
3. case: zh / zhen / en / ja lower case, es upper case (full mapping: ß -> SS), others unchanged;
4. ``<word|PRON>`` annotations -> `` PRON `` (kana) or PRON wrapped in ``<|SPECIAL_TOKEN_2|>`` (word with a CJK
   ideograph) / ``<|SPECIAL_TOKEN_1|>``; the word itself is dropped and PRON upper-cased;
5. ja: MeCab word split (fugashi + unidic-lite), which also splits the special-token wrappers of step 4;
6. the inside of every ``<|...|>`` upper-cased (a typed ``<|zh|>`` becomes the plain text ``<|ZH|>``);
7. :func:`split_by_tokens` at the token budget; each segment is encoded as ``'<|lang|> ' + segment``.

The GPT then drops every id 0 (``!``) and 1 (``"``) and wraps the rest in 0 ... 1 (:func:`gpt_view`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import TextError, _check_text
from .normalizer import TextNormalizer, load_glossary
from .normalizer import _map_punct as char_map
from .v25_vocab import V25Tokenizer, lang_index, load_tokenizer

log = logging.getLogger(__name__)

SUPPORTED_LANGUAGES = ("zh", "en", "ja", "es", "ar")
# Default max_text_tokens_per_segment per language (upstream's 120 collapses the last sentence of long English
# paragraphs, upstream #775; the values other 2.5 front ends default to).
DEFAULT_SEGMENT_TOKENS = {"zh": 120, "en": 60, "ja": 100, "es": 60, "ar": 80}
WETEXT_LANGUAGES = ("zh", "zhen", "en")
LOWER_CASE_LANGUAGES = ("zh", "zhen", "en", "ja")
UPPER_CASE_LANGUAGES = ("es",)
NO_NORMALIZER_LANGUAGES = ("ja", "es")  # upstream calls NeMo here, which its default install does not have
TEXT_POSITIONS = 602  # rows of the GPT's text position table at the released size (max_text_tokens 600 + 2)
START_TEXT_ID = 0
STOP_TEXT_ID = 1

_ANNOTATION = re.compile(r"<([^|>\n]+)\|([^>\n]+)>")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_KANA = re.compile(r"[\u3040-\u309f]+|[\u30a0-\u30ff]+")
_SPECIAL = re.compile(r"<\|([^|]+)\|>")
_ATOMIC = re.compile(r"<\|SPECIAL_TOKEN_\d+\|>.*?<\|SPECIAL_TOKEN_\d+\|>")
_AFTER_MARK = re.compile(r"(?<=[，。！？、；：,.!?;:\n])")
_SPACES = re.compile(r"( +)")

_KANA_CHAR = re.compile(r"[\u3040-\u30ff]")
_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_SPANISH = re.compile(r"[¿¡ñÑáéíóúÁÉÍÓÚü]")

_warned_no_normalizer: set[str] = set()


def check_language(lang: str) -> str:
    """The lower-case code of a language IndexTTS-2.5 speaks, else a TextError naming the choices."""
    code = lang.strip().lower() if isinstance(lang, str) else ""
    if code not in SUPPORTED_LANGUAGES:
        raise TextError(f"unknown language {lang!r} for IndexTTS-2.5; use one of {', '.join(SUPPORTED_LANGUAGES)}")
    return code


def guess_language(text: str) -> str:
    """A default language from the text's script: kana -> ja, Arabic -> ar, Han -> zh, Spanish letters -> es, else en.
    (A guess for a picker's default; the user's choice is what counts.)"""
    if _KANA_CHAR.search(text):
        return "ja"
    if _ARABIC.search(text):
        return "ar"
    if _HAN.search(text):
        return "zh"
    return "es" if _SPANISH.search(text) else "en"


def default_segment_tokens(lang: str) -> int:
    """Tokens per segment to start from for ``lang`` (see DEFAULT_SEGMENT_TOKENS; 120, upstream's, otherwise)."""
    return DEFAULT_SEGMENT_TOKENS.get(lang.lower(), 120)


def lang_prefix(lang: str) -> str:
    return f"<|{lang.lower()}|> "


def apply_annotations(text: str) -> str:
    """``<word|PRON>`` -> the upper-cased PRON, spaced (kana) or between SPECIAL_TOKEN_2 (Han word) / _1 tags."""

    def replace(m: re.Match[str]) -> str:
        pron = m.group(2).upper()
        if _KANA.fullmatch(pron):
            return f" {pron} "
        tag = "<|SPECIAL_TOKEN_2|>" if _HAN.search(m.group(1)) else "<|SPECIAL_TOKEN_1|>"
        return f"{tag}{pron}{tag}"

    return _ANNOTATION.sub(replace, text)


def upper_special_tags(text: str) -> str:
    return _SPECIAL.sub(lambda m: f"<|{m.group(1).upper()}|>", text)


def apply_case(text: str, lang: str) -> str:
    code = lang.lower()
    if code in LOWER_CASE_LANGUAGES:
        return text.lower()
    if code in UPPER_CASE_LANGUAGES:
        return text.upper()
    return text


class JapaneseWordSplit:
    """MeCab (fugashi + unidic-lite) surfaces joined by single spaces; runs of ASCII spaces are kept as they are."""

    def __init__(self) -> None:
        self._tagger: object | None = None

    def _tag(self, piece: str) -> list[str]:
        if self._tagger is None:
            try:
                import fugashi
            except ImportError:
                raise TextError(
                    "Japanese text needs the fugashi and unidic-lite packages, which are missing; reinstall the app"
                ) from None
            self._tagger = fugashi.Tagger()
        return [word.surface for word in self._tagger(piece)]  # type: ignore[operator]

    def __call__(self, text: str) -> str:
        return "".join(" ".join(self._tag(p)) if p.strip() else p for p in _SPACES.split(text))


def gpt_view(ids: list[int]) -> tuple[list[int], int]:
    """What the 2.5 GPT embeds for ``ids`` (a segment's ids with the stop id appended): every 0 and 1 removed,
    then wrapped in start/stop; and the number of removed ids (= masked zero rows that pad the prompt on the left)."""
    kept = [i for i in ids if i not in (START_TEXT_ID, STOP_TEXT_ID)]
    return [START_TEXT_ID, *kept, STOP_TEXT_ID], len(ids) - len(kept)


def segment_budget(max_tokens: int, prefix: str, tokenizer: V25Tokenizer, positions: int = TEXT_POSITIONS) -> int:
    """Tokens a segment may have besides the language prefix (at least 1)."""
    return max(1, min(max_tokens, positions - 2) - tokenizer.count(prefix))


def split_by_tokens(
    text: str, max_tokens: int, prefix: str, tokenizer: V25Tokenizer, positions: int = TEXT_POSITIONS
) -> list[str]:
    """Cut ``text`` into segments whose ids (with ``prefix``) fit the budget ``min(max_tokens, positions - 2)``.

    Pieces end after a punctuation mark or newline; a piece over budget is cut between characters;
    ``<|SPECIAL_TOKEN_n|>...<|SPECIAL_TOKEN_n|>`` spans are never cut. Pieces are then joined greedily. Every
    count re-encodes the string (a join can merge tokens), so budgets hold for the text as encoded.
    """
    budget = segment_budget(max_tokens, prefix, tokenizer, positions)
    if tokenizer.count(text) <= budget:
        return [text]
    chunks: list[str] = []
    for piece, atomic in _atomic_pieces(text):
        if atomic:
            chunks.append(piece)
            continue
        for part in _AFTER_MARK.split(piece):
            if part and tokenizer.count(part) <= budget:
                chunks.append(part)
            elif part:
                chunks.extend(_greedy_join(list(part), budget, tokenizer))
    return _greedy_join(chunks, budget, tokenizer) or [text]


def _atomic_pieces(text: str) -> list[tuple[str, bool]]:
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for m in _ATOMIC.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos : m.start()], False))
        pieces.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces


def _greedy_join(chunks: list[str], budget: int, tokenizer: V25Tokenizer) -> list[str]:
    """Concatenate chunks in order while the joined string stays within ``budget`` tokens."""
    out: list[str] = []
    current = ""
    for chunk in chunks:
        if current and tokenizer.count(current + chunk) > budget:
            out.append(current)
            current = chunk
        else:
            current += chunk
    if current:
        out.append(current)
    return out


@dataclass(frozen=True)
class V25Trace:
    """Every intermediate of :meth:`V25TextFrontend.prepare` (``normalized`` is None when no normaliser ran)."""

    lang: str
    after_char_map: str
    normalizer: str | None
    normalized: str | None
    after_case: str
    after_annotations: str
    after_ja_word_split: str | None
    split_input: str


@dataclass(frozen=True)
class V25Segment:
    """One segment: its text and ``ids`` = encode(prefix + text), the stop id not yet appended."""

    text: str
    ids: list[int]

    @property
    def gpt_input(self) -> list[int]:
        """The ids handed to the GPT (stop id appended; the GPT applies :func:`gpt_view`)."""
        return [*self.ids, STOP_TEXT_ID]

    @property
    def ignored_tokens(self) -> int:
        """Tokens of this segment the model never sees: a ``!`` or ``"`` that the tokenizer left on its own
        (ids 0 and 1 collide with the GPT's start/stop ids and are dropped, as upstream does). A text preview
        should say so: such a mark has no effect."""
        return gpt_view(self.gpt_input)[1] - 1


class V25TextFrontend:
    """2.5 text -> segments. ``vocab_path`` is the model folder's ``.tiktoken`` file."""

    def __init__(
        self, vocab_path: str | Path, glossary: str | Path | Mapping[str, str | Mapping[str, str]] | None = None,
        positions: int = TEXT_POSITIONS,
    ) -> None:
        self.tokenizer = load_tokenizer(vocab_path)
        if isinstance(glossary, (str, Path)):
            glossary = load_glossary(glossary)
        self.normalizer = TextNormalizer(glossary)
        self.japanese = JapaneseWordSplit()
        self.positions = positions

    def _normalize(self, text: str, lang: str) -> tuple[str | None, str | None]:
        code = lang.lower()
        if code in WETEXT_LANGUAGES:
            return "wetext", self.normalizer.normalize(text)
        if code in NO_NORMALIZER_LANGUAGES:
            if code == "es" and code not in _warned_no_normalizer:
                _warned_no_normalizer.add(code)
                log.warning("Spanish text is not normalised (as in upstream IndexTTS-2.5's default install): "
                            "numbers and symbols are passed to the model as written")
            return "none", text
        return None, None

    def prepare(self, text: str, lang: str, normalize: bool = True) -> V25Trace:
        """Steps 1-6: the string the segmenter sees, with every intermediate."""
        text = _check_text(text)
        mapped = char_map(text)
        normalizer, normalized = self._normalize(mapped, lang) if normalize else (None, None)
        cased = apply_case(mapped if normalized is None else normalized, lang)
        annotated = apply_annotations(cased)
        split = self.japanese(annotated) if lang.lower() == "ja" else None
        return V25Trace(lang, mapped, normalizer, normalized, cased, annotated, split,
                        upper_special_tags(annotated if split is None else split))

    def split(self, text: str, lang: str, max_tokens: int = 120) -> list[str]:
        """Segment strings of already prepared text (:attr:`V25Trace.split_input`)."""
        return split_by_tokens(text, max_tokens, lang_prefix(lang), self.tokenizer, self.positions)

    def encode_segment(self, segment: str, lang: str) -> V25Segment:
        return V25Segment(segment, self.tokenizer.encode(lang_prefix(lang) + segment))

    def segments(self, text: str, lang: str, max_tokens: int = 120, normalize: bool = True) -> list[V25Segment]:
        """The whole front end: raw text -> encoded segments."""
        prepared = self.prepare(text, lang, normalize).split_input
        return [self.encode_segment(s, lang) for s in self.split(prepared, lang, max_tokens)]

    @staticmethod
    def lang_index(lang: str) -> int:
        return lang_index(lang)
