"""Text normalisation as IndexTTS-2 does it (``indextts/utils/front.py`` ``TextNormalizer``, Linux branch).

Steps: protect ``<text|reading>`` annotations, pick the Chinese or English grammar, rewrite a few English
contractions, apply the glossary, protect tech terms (and, for Chinese, pinyin with tone digits and names with
``·``/``-``/``—``), run the grammar, restore what was protected, map punctuation, restore the annotations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from . import fst

log = logging.getLogger(__name__)


class GlossaryError(ValueError):
    """The glossary file is missing or malformed."""


_PRON_ANNOTATION = re.compile(r"<([^|>\n]+)\|([^>\n]+)>")
_HAS_HAN = re.compile(r"[\u4e00-\u9fff]")
_HAS_ASCII_LETTER = re.compile(r"[a-zA-Z]")
_EMAIL = re.compile(r"^[a-zA-Z0-9]+@[a-zA-Z0-9]+\.[a-zA-Z]+$")
PINYIN_TONE = re.compile(
    r"(?<![a-z])((?:[bpmfdtnlgkhjqxzcsryw]|[zcs]h)?(?:[aeiouüv]|[ae]i|u[aio]|ao|ou|i[aue]|[uüv]e|[uvü]ang?|uai"
    r"|[aeiuv]n|[aeio]ng|ia[no]|i[ao]ng)|ng|er)([1-5])",
    re.IGNORECASE,
)
_NAME = re.compile(r"[\u4e00-\u9fff]+(?:[-·—][\u4e00-\u9fff]+){1,2}", re.IGNORECASE)
_TECH_TERM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+")
_CONTRACTION = re.compile(r"(what|where|who|which|how|t?here|it|s?he|that|this)'s", re.IGNORECASE)
_JQX_U = re.compile(r"([jqx])[uü](n|e|an)*(\d)", re.IGNORECASE)
_HYPHEN_MARK = re.compile(r"\s*<H>\s*")

# Punctuation map applied after the grammar; key order matters (regex alternation, first key wins).
PUNCT_MAP: dict[str, str] = {
    "：": ",", "；": ",", ";": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": " ", "·": "-", "、": ",",
    "...": "…", ",,,": "…", "，，，": "…", "……": "…",
    "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'",
    "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'",
    "—": "-", "～": "-", "~": "-", "「": "'", "」": "'", ":": ",",
}  # fmt: skip
ZH_PUNCT_MAP: dict[str, str] = {"$": ".", **PUNCT_MAP}


def _alternation(mapping: Mapping[str, str]) -> Callable[[str], str]:
    pattern = re.compile("|".join(re.escape(k) for k in mapping))
    return lambda text: pattern.sub(lambda m: mapping[m.group()], text)


_map_punct = _alternation(PUNCT_MAP)
_map_punct_zh = _alternation(ZH_PUNCT_MAP)


def _letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa, ... (annotation placeholder tags)."""
    s = ""
    while True:
        s = chr(ord("a") + n % 26) + s
        n = n // 26 - 1
        if n < 0:
            return s


def _distinct(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _protect(text: str, found: list[str], prefix: str) -> tuple[str, list[str]]:
    """Replace each distinct string in ``found`` by ``<prefix_x>`` (x = a, b, ... in order of first appearance).

    Upstream uses Python set order, which varies with the hash seed; replacing longest first is the deterministic
    choice (it only matters when one protected string contains another).
    """
    terms = _distinct(found)
    for i, term in sorted(enumerate(terms), key=lambda it: -len(it[1])):
        text = text.replace(term, f"<{prefix}_{chr(ord('a') + i)}>")
    return text, terms


def _restore(text: str, terms: list[str], prefix: str, fix: Callable[[str], str] = lambda s: s) -> str:
    for i, term in enumerate(terms):
        text = text.replace(f"<{prefix}_{chr(ord('a') + i)}>", fix(term))
    return text


def correct_pinyin(syllable: str) -> str:
    """j/q/x syllables: u/ü after the initial becomes v and the whole syllable is upper-cased (ju4 -> JV4)."""
    if syllable[0] not in "jqxJQX":
        return syllable
    return _JQX_U.sub(r"\g<1>v\g<2>\g<3>", syllable).upper()


def use_chinese_grammar(text: str) -> bool:
    """Upstream's language decision: Chinese unless the text has ASCII letters and no Han/pinyin/e-mail."""
    if _HAS_HAN.search(text) or not _HAS_ASCII_LETTER.search(text) or _EMAIL.match(text):
        return True
    return PINYIN_TONE.search(text) is not None


def _literal(replacement: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that inserts ``replacement`` verbatim (no backslash or group expansion)."""
    return lambda _match: replacement


def load_glossary(path: str | Path) -> dict[str, str | dict[str, str]]:
    """Read a glossary YAML file: ``term: reading`` or ``term: {en: reading, zh: reading}``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise GlossaryError(f"glossary file {path} does not exist; pass glossary_path=None to use no glossary")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GlossaryError(f"cannot read glossary {path}: {exc}; it must be UTF-8 YAML (term: reading)") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GlossaryError(f"glossary {path} must be a mapping of term -> reading, not {type(data).__name__}")
    glossary: dict[str, str | dict[str, str]] = {}
    for term, value in data.items():
        if isinstance(value, dict):
            glossary[str(term)] = {str(k): str(v) for k, v in value.items()}
        elif value is not None:
            glossary[str(term)] = str(value)
        else:
            raise GlossaryError(f"glossary {path}: term {term!r} has no reading")
    return glossary


Glossary = Mapping[str, str | Mapping[str, str]]


def glossary_entries(source: str | Path | Glossary | None) -> dict[str, str | Mapping[str, str]]:
    """Glossary entries from a YAML file (:func:`load_glossary`), a mapping (kept as given) or None (none)."""
    if source is None:
        return {}
    return dict(load_glossary(source) if isinstance(source, (str, Path)) else source)


class TextNormalizer:
    """IndexTTS-2's normaliser. Grammars are loaded on first use and shared by all instances of the process."""

    def __init__(self, glossary: Mapping[str, str | Mapping[str, str]] | None = None, fst_dir: Path | None = None):
        self.fst_dir = fst_dir
        self._model_glossary = dict(glossary or {})
        self.set_user_glossary({})

    def set_user_glossary(self, entries: Mapping[str, str | Mapping[str, str]]) -> None:
        """Use the user's pronunciation dictionary on top of the glossary given at construction (a user entry
        replaces a model entry for the same term)."""
        self.glossary = {**self._model_glossary, **entries}
        self._glossary_patterns = [
            (re.compile(re.escape(term), re.IGNORECASE), term, self.glossary[term])
            for term in sorted(self.glossary, key=len, reverse=True)
        ]

    def terms_in(self, text: str) -> dict[str, str | Mapping[str, str]]:
        """The glossary entries whose term occurs in ``text`` (what a change of the glossary can affect)."""
        return {term: value for pattern, term, value in self._glossary_patterns if pattern.search(text)}

    def apply_glossary(self, text: str, lang: str) -> str:
        """Case-insensitive literal replacement, longest term first (upstream ``apply_glossary_terms``)."""
        for pattern, term, value in self._glossary_patterns:
            # A per-language entry without this language keeps the term (the replacement is literal text).
            reading = value.get(lang, term) if isinstance(value, Mapping) else value
            text = pattern.sub(_literal(reading), text)
        return text

    def _run_grammar(self, lang: str, text: str) -> str:
        return fst.grammar(lang, self.fst_dir).normalize(text)

    def grammar_input(self, text: str) -> tuple[str, str]:
        """(language, exact string handed to the grammar) — for tests and debugging."""
        return self._prepare(text)[:2]

    def _prepare(self, text: str) -> tuple[str, str, dict]:
        text, annotations = self._protect_annotations(text)
        state: dict = {"annotations": annotations}
        lang = "zh" if use_chinese_grammar(text) else "en"
        text = self.apply_glossary(_CONTRACTION.sub(r"\1 is", text), lang)
        if lang == "zh":
            text, state["tech"] = self._protect_tech(text.rstrip())
            text, state["pinyin"] = _protect(text, ["".join(m) for m in PINYIN_TONE.findall(text)], "pinyin")
            text, state["names"] = _protect(text, _NAME.findall(text), "n")
            return "zh", text, state
        state["fallback"] = text
        text, state["tech"] = self._protect_tech(text)
        return "en", text, state

    def normalize(self, text: str) -> str:
        lang, grammar_input, state = self._prepare(text)
        try:
            result = self._run_grammar(lang, grammar_input)
        except fst.NoGrammarPath as exc:
            # Upstream falls back to "" (Chinese) or the unnormalised text (English) when the grammar fails.
            fallback = "empty text" if lang == "zh" else "raw text"
            log.warning("text normalisation failed, using the %s: %s", fallback, exc)
            if lang == "en":
                result = _map_punct(state["fallback"])
                return self._restore_annotations(result, state["annotations"])
            result = ""
        if lang == "zh":
            result = _restore(result, state["names"], "n")
            result = _restore(result, state["pinyin"], "pinyin", correct_pinyin)
            result = self._restore_tech(result, state["tech"])
            result = _map_punct_zh(result)
        else:
            result = self._restore_tech(result, state["tech"])
            result = _map_punct(result)
        return self._restore_annotations(result, state["annotations"])

    @staticmethod
    def _protect_annotations(text: str) -> tuple[str, dict[str, str]]:
        placeholders: dict[str, str] = {}

        def replace(m: re.Match) -> str:
            key = f"PRONPLACEHOLDER{_letters(len(placeholders))}PRONPLACEHOLDER"
            placeholders[key] = m.group(0)
            return key

        return _PRON_ANNOTATION.sub(replace, text), placeholders

    @staticmethod
    def _restore_annotations(text: str, placeholders: dict[str, str]) -> str:
        for key, original in placeholders.items():
            text = text.replace(key, original)
        return text

    @staticmethod
    def _protect_tech(text: str) -> tuple[str, bool]:
        terms = _distinct(_TECH_TERM.findall(text))
        for term in sorted(terms, key=len, reverse=True):
            text = text.replace(term, term.replace("-", "<H>"))
        return text, bool(terms)

    @staticmethod
    def _restore_tech(text: str, had_terms: bool) -> str:
        return _HYPHEN_MARK.sub("-", text) if had_terms else text
