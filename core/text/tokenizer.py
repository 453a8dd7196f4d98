"""SentencePiece tokenisation as IndexTTS-2 does it (``TextTokenizer.encode`` with ``tokenize_by_CJK_char``)."""

from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm

_CJK_CHAR = re.compile(
    r"([\u1100-\u11ff\u2e80-\ua4cf\ua840-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff65-\uffdc\U00020000-\U0002ffff])"
)


class TokenizerError(ValueError):
    """The BPE model file is missing or unreadable."""


def split_cjk(text: str) -> str:
    """Put every CJK character between spaces, strip and upper-case the pieces, join them with one space."""
    pieces = (piece.strip() for piece in _CJK_CHAR.split(text.strip()))
    return " ".join(piece.upper() for piece in pieces if piece)


class BpeModel:
    """The ``bpe.model`` SentencePiece model (a Unigram model despite the name)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(
                f"BPE model {path} does not exist; download the IndexTTS-2 checkpoints (it ships as bpe.model)"
            )
        self.path = path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(
                f"cannot load BPE model {path}: {exc}; the file is corrupt, download it again"
            ) from exc

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def encode_pieces(self, text: str) -> list[str]:
        return self.sp.Encode(text, out_type=str)

    def piece_to_id(self, pieces: list[str]) -> list[int]:
        return [self.sp.PieceToId(p) for p in pieces]

    def id_to_piece(self, ids: list[int]) -> list[str]:
        return [self.sp.IdToPiece(i) for i in ids]
