"""Run WeTextProcessing's compiled text-normalisation grammars with kaldifst.

A grammar is a pair of OpenFst byte-label transducers. Normalising a string is:

1. *tag*: compose a byte acceptor of the input with the tagger, take the single shortest path and read its
   output, e.g. ``char { value: "x" } date { year: "2024" month: "3" }``;
2. *reorder*: re-serialise the tagged fields of some token types in a canonical order (see ``reorder_fields``);
3. *verbalize*: the same composition / shortest path with the verbalizer on the reordered string.

Only one single shortest path is taken (OpenFst's tie-breaking), exactly as WeTextProcessing 1.2.0 does with
``nshortest=1``; an n-best re-ranking (as in ``wetext``) resolves ties differently.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import kaldifst

log = logging.getLogger(__name__)

FST_DIR = Path(__file__).resolve().parent.parent / "assets" / "fst"

# Canonical field order per token type. A token listed here is re-serialised with exactly these fields, in this
# order (fields not listed are dropped), unless it carries preserve_order: "true".
ZH_ORDERS: dict[str, tuple[str, ...]] = {
    "date": ("year", "month", "day"),
    "fraction": ("denominator", "numerator"),
    "measure": ("denominator", "numerator", "value"),
    "money": ("value", "currency"),
    "time": ("noon", "hour", "minute", "second"),
}
EN_ORDERS: dict[str, tuple[str, ...]] = {
    "date": ("preserve_order", "text", "day", "month", "year"),
    "money": ("integer_part", "fractional_part", "quantity", "currency_maj"),
}


# Long inputs. Composition costs about 0.15 ms (Chinese) to 0.4 ms (English) per character on one core and
# grows faster than linearly with the input (11 s for 12k characters of English in one pass), so a text longer
# than LONG_TEXT_CHARS is normalised piecewise: pieces of up to CHUNK_CHARS, cut at sentence boundaries. Up to
# LONG_TEXT_CHARS the whole text goes through the grammar in one pass, exactly as upstream does. Piecewise
# results can differ from one pass in rare cases: the English grammar breaks near-ties between readings (e.g.
# "14" as "fourteen" or "one four") by the float32 path weight accumulated over the whole text, so a reading
# can depend on text far away; such an input has no context-free reading.
LONG_TEXT_CHARS = 3000
CHUNK_CHARS = 200
# A sentence longer than this is cut at a weaker boundary (between two Han characters / at a space between
# lower-case words); a text without any such place is cut blindly.
HARD_CHUNK_CHARS = 1000

# zh: every token of the Chinese grammar ends before a full-width sentence mark (they are single `char` tokens).
_ZH_SENTENCE_END = re.compile(r"[。！？]")
_ZH_WEAK = re.compile(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])")
# en: `!`/`?`, or a period after a lower-case word of two or more letters (not an abbreviation such as "Dr.",
# "Sept.", "p.m."), followed by ASCII spaces and an upper-case letter. The spaces are kept between the pieces:
# the English grammar keeps them after sentence punctuation.
_EN_SENTENCE_END = re.compile(r"(?:[!?]|(?<![A-Za-z.])[a-z]{2,}\.)(?= +[A-Z])")
_EN_WEAK = re.compile(r"(?<=[a-z]) (?=[a-z])")


class GrammarError(ValueError):
    """A grammar file is missing or unreadable."""


class NoGrammarPath(GrammarError):
    """The grammar accepts no path for this input (upstream then falls back; see ``TextNormalizer``)."""


@dataclass
class _Token:
    name: str
    fields: list[tuple[str, str]] = field(default_factory=list)


def _parse_tagged(tagged: str) -> list[_Token]:
    """Parse ``name { key: "value" ... } name { ... }`` as WeTextProcessing's TokenParser does.

    Values keep their backslash escapes verbatim (``\\"`` stays two characters); the verbalizer expects them.
    The parser is lenient like the original: it never fails on the (well-formed) tagger output.
    """
    tokens: list[_Token] = []
    n = len(tagged)
    i = 0

    def skip_spaces(j: int) -> int:
        while j < n and tagged[j] == " ":
            j += 1
        return j

    def read_key(j: int) -> tuple[str, int]:
        start = j
        while j < n and (tagged[j].isascii() and (tagged[j].isalpha() or tagged[j] == "_")):
            j += 1
        return tagged[start:j], j

    def skip_any_of(j: int, chars: str) -> int:
        # TokenParser.parse_chars consumes each expected character only where it is present.
        for ch in chars:
            if j < n and tagged[j] == ch:
                j += 1
        return j

    while True:
        i = skip_spaces(i)
        if i >= n:
            break
        name, i = read_key(i)
        i = skip_any_of(i, " { ")
        token = _Token(name)
        while True:
            i = skip_spaces(i)
            if i >= n:
                break
            if tagged[i] == "}":
                i += 1
                break
            key, i = read_key(i)
            i = skip_any_of(i, ': "')
            start = i
            while i < n and tagged[i] != '"':
                i += 2 if tagged[i] == "\\" else 1
            value = tagged[start:min(i, n)]
            if i < n:
                i += 1  # closing quote
            token.fields.append((key, value))
            if not key and i == start:
                break  # malformed input: stop instead of looping
        tokens.append(token)
        if not name and not token.fields:
            break
    return tokens


def reorder_fields(tagged: str, orders: dict[str, tuple[str, ...]]) -> str:
    """Re-serialise tagged tokens with the canonical field order of their type."""
    parts: list[str] = []
    for token in _parse_tagged(tagged):
        members = dict(token.fields)
        keys: list[str] | tuple[str, ...] = [k for k, _ in token.fields]
        if token.name in orders and members.get("preserve_order") != "true":
            keys = orders[token.name]
        body = "".join(f' {k}: "{members[k]}"' for k in keys if k in members)
        parts.append(f"{token.name} {{{body} }}")
    return " ".join(parts)


def _byte_acceptor(data: bytes) -> kaldifst.StdVectorFst:
    fst = kaldifst.StdVectorFst()
    state = fst.add_state()
    fst.start = state
    for b in data:
        nxt = fst.add_state()
        fst.add_arc(state, kaldifst.StdArc(b, b, 0.0, nxt))
        state = nxt
    fst.set_final(state, 0.0)
    return fst


def _read_fst(path: Path) -> kaldifst.StdVectorFst:
    if not path.is_file():
        raise GrammarError(
            f"text-normalisation grammar {path} is missing; reinstall the application (the FST files ship in "
            "core/assets/fst)"
        )
    try:
        loaded = kaldifst.StdVectorFst.read(str(path))
    except Exception as exc:
        loaded, reason = None, str(exc)
    else:
        reason = "not an OpenFst vector FST, or truncated"
    if loaded is None or loaded.num_states == 0:
        raise GrammarError(
            f"cannot read text-normalisation grammar {path}: {reason}; the file is corrupt, reinstall the application"
        )
    return loaded


class Grammar:
    """A tagger/verbalizer pair with its field-order table (read-only after loading).

    kaldifst holds the GIL while composing, so calls from several threads run one after another.
    """

    def __init__(self, lang: str, tagger_path: Path, verbalizer_path: Path, orders: dict[str, tuple[str, ...]]):
        self.lang = lang
        self.tagger = _read_fst(tagger_path)
        self.verbalizer = _read_fst(verbalizer_path)
        self.orders = orders
        self._paths = (tagger_path, verbalizer_path)

    def _transduce(self, fst: kaldifst.StdVectorFst, text: str, what: str) -> str:
        lattice = kaldifst.compose(_byte_acceptor(text.encode("utf-8")), fst)
        best = kaldifst.shortest_path(lattice, n=1)
        ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
        if not ok or best.num_states == 0:
            raise NoGrammarPath(f"the {what} grammar ({self._paths[0].name}) has no path for the text {text[:80]!r}")
        return bytes(olabels).decode("utf-8", errors="replace")

    def tag(self, text: str) -> str:
        return self._transduce(self.tagger, text, "tagger") if text else ""

    def verbalize(self, tagged: str) -> str:
        if not tagged:
            return ""
        return self._transduce(self.verbalizer, reorder_fields(tagged, self.orders), "verbalizer")

    def normalize(self, text: str, long_text_chars: int = LONG_TEXT_CHARS, chunk_chars: int = CHUNK_CHARS) -> str:
        """Normalise ``text``; one longer than ``long_text_chars`` is run piecewise (see ``split_for_grammar``)."""
        if not text:
            return ""
        if len(text) <= long_text_chars:
            return self.verbalize(self.tag(text))
        return "".join(
            self.verbalize(self.tag(piece)) + gap for piece, gap in split_for_grammar(text, self.lang, chunk_chars)
        )


_cache: dict[str, Grammar] = {}
_lock = threading.Lock()


def grammar(lang: str, fst_dir: Path | None = None) -> Grammar:
    """The ``"zh"`` or ``"en"`` grammar, loaded once per process (and per directory)."""
    if lang not in ("zh", "en"):
        raise ValueError(f"unknown grammar language {lang!r}; expected 'zh' or 'en'")
    root = Path(fst_dir) if fst_dir is not None else FST_DIR
    key = f"{root}::{lang}"
    with _lock:
        if key not in _cache:
            log.debug("loading %s text-normalisation grammar from %s", lang, root)
            _cache[key] = Grammar(
                lang,
                root / f"{lang}_tn_tagger.fst",
                root / f"{lang}_tn_verbalizer.fst",
                ZH_ORDERS if lang == "zh" else EN_ORDERS,
            )
        return _cache[key]


def _cut_points(text: str, lang: str, weak: bool) -> list[tuple[int, int]]:
    """(end of piece, start of next piece) for every admissible boundary, in order."""
    if lang == "zh":
        pattern = _ZH_WEAK if weak else _ZH_SENTENCE_END
        return [(m.end(), m.end()) for m in pattern.finditer(text)]
    if weak:
        return [(m.start(), m.end()) for m in _EN_WEAK.finditer(text)]
    cuts = []
    for m in _EN_SENTENCE_END.finditer(text):
        start = m.end()
        while start < len(text) and text[start] == " ":
            start += 1
        cuts.append((m.end(), start))
    return cuts


def _pack(text: str, cuts: list[tuple[int, int]], limit: int) -> list[tuple[int, int, int]]:
    """Greedily group the text between cuts into pieces of at most ``limit`` characters where possible.

    Returns (start, end, next_start) triples; text[end:next_start] is the gap kept between two pieces.
    """
    pieces = []
    start = 0
    last: tuple[int, int] | None = None
    for end, nxt in cuts:
        if end - start > limit and last is not None:
            pieces.append((start, last[0], last[1]))
            start = last[1]
        last = (end, nxt)
    if last is not None and len(text) - start > limit and last[1] > start:
        pieces.append((start, last[0], last[1]))
        start = last[1]
    pieces.append((start, len(text), len(text)))
    return pieces


def split_for_grammar(text: str, lang: str, chunk_chars: int = CHUNK_CHARS) -> list[tuple[str, str]]:
    """Split ``text`` into (piece, gap) pairs whose normalisations, joined with their gaps, give the whole.

    Pieces are cut at sentence boundaries; a piece still longer than ``max(chunk_chars, HARD_CHUNK_CHARS)`` is cut
    at weaker boundaries, and as a last resort every ``HARD_CHUNK_CHARS`` characters (such a text has no
    upstream-identical normalisation in reasonable time anyway).
    """
    hard = max(chunk_chars, HARD_CHUNK_CHARS)
    result: list[tuple[str, str]] = []
    for start, end, nxt in _pack(text, _cut_points(text, lang, weak=False), chunk_chars):
        sentence, gap = text[start:end], text[end:nxt]
        if len(sentence) <= hard:
            result.append((sentence, gap))
            continue
        sub = _pack(sentence, _cut_points(sentence, lang, weak=True), hard)
        for k, (s2, e2, n2) in enumerate(sub):
            part, part_gap = sentence[s2:e2], sentence[e2:n2]
            if k == len(sub) - 1:
                part_gap += gap
            blind = [part[i : i + hard] for i in range(0, len(part), hard)] or [""]
            result.extend((b, "") for b in blind[:-1])
            result.append((blind[-1], part_gap))
    return [(piece, gap) for piece, gap in result if piece or gap]
