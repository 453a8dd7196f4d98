"""IndexTTS-2 text front end: normalise, tokenise with ``bpe.model``, split into segments.

>>> fe = TextFrontend("checkpoints/bpe.model")
>>> pieces = fe.tokenize("你好，world！")
>>> ids = fe.convert_tokens_to_ids(pieces)
>>> segments = fe.split_segments(pieces, max_text_tokens_per_segment=120)

Matches upstream ``indextts/utils/front.py`` (``TextNormalizer`` + ``TextTokenizer``) as ``infer_v2`` runs it on
Linux (WeTextProcessing grammars, interjections and erhua kept), using the compiled grammars in
``core/assets/fst`` through kaldifst.
"""

from __future__ import annotations

import re
from pathlib import Path

from .fst import GrammarError
from .normalizer import GlossaryError, TextNormalizer, load_glossary
from .segment import split_segments as _split_segments
from .tokenizer import BpeModel, TokenizerError, split_cjk

__all__ = [
    "TextFrontend",
    "TextError",
    "TextNormalizer",
    "GlossaryError",
    "GrammarError",
    "TokenizerError",
    "split_cjk",
]


class TextError(ValueError):
    """The text itself cannot be processed (not a string, invalid Unicode)."""


class TextFrontend:
    """Text -> SentencePiece pieces / ids / segments, exactly as IndexTTS-2 prepares GPT input."""

    def __init__(self, bpe_model_path: str | Path, glossary_path: str | Path | None = None):
        self.bpe = BpeModel(bpe_model_path)
        glossary = load_glossary(glossary_path) if glossary_path is not None else None
        self.normalizer = TextNormalizer(glossary)

    def load_grammars(self) -> None:
        """Load both normalisation grammars now (they otherwise load on first use, once per process)."""
        from . import fst

        fst.grammar("zh", self.normalizer.fst_dir)
        fst.grammar("en", self.normalizer.fst_dir)

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    @property
    def unk_id(self) -> int:
        return self.bpe.unk_id

    def normalize(self, text: str) -> str:
        """The normalised text (numbers read out, punctuation mapped, ...), before CJK splitting."""
        return self.normalizer.normalize(_check_text(text))

    def tokenize(self, text: str) -> list[str]:
        """SentencePiece pieces for ``text``. Text that is one character after ``strip()`` is encoded raw."""
        text = _check_text(text)
        if not text:
            return []
        if len(text.strip()) == 1:
            return self.bpe.encode_pieces(text)
        return self.bpe.encode_pieces(split_cjk(self.normalizer.normalize(text)))

    def convert_tokens_to_ids(self, pieces: list[str] | str) -> list[int]:
        if isinstance(pieces, str):
            pieces = [pieces]
        return self.bpe.piece_to_id(list(pieces))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self.bpe.id_to_piece(list(ids))

    def encode(self, text: str) -> list[int]:
        return self.convert_tokens_to_ids(self.tokenize(text))

    def split_segments(
        self, pieces: list[str], max_text_tokens_per_segment: int = 120, quick_streaming_tokens: int = 0
    ) -> list[list[str]]:
        return _split_segments(pieces, max_text_tokens_per_segment, quick_streaming_tokens)

    def segments(self, text: str, max_tokens: int = 120) -> list[list[str]]:
        return self.split_segments(self.tokenize(text), max_tokens)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: object) -> str:
    """Validate the input; UTF-16 surrogate pairs (as some Tk builds deliver emoji) are joined into characters."""
    if not isinstance(text, str):
        raise TextError(f"text must be a str, got {type(text).__name__}")
    if _SURROGATE.search(text):
        try:
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError as exc:
            pos = exc.start // 2
            raise TextError(
                f"text contains an unpaired UTF-16 surrogate near character {pos} "
                f"(after {text[max(0, pos - 10):pos]!r}); it is not valid Unicode — re-enter that part of the text"
            ) from None
    return text
