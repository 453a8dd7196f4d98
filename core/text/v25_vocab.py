"""The IndexTTS-2.5 tokenizer: a tiktoken BPE over ``multilingual_zh_ja_yue_char_del.tiktoken`` plus 1,673 specials.

The vocabulary file holds 58,836 ``<base64 bytes> <rank>`` lines. Special tokens follow the ranks in a fixed
order (end of text, start of transcript, 99 language tags, audio events, emotions, task tags, 30 numbered
special tokens, 20 TTS tags, 1,501 timestamps), 60,509 ids in all. ``lang_index`` gives the row of the GPT's
``lang_embedding`` for a language code (unknown codes share the row of ``common``).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .tokenizer import TokenizerError

VOCAB_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"
VOCAB_SHA256 = "747979631e813193436aabcff7c1c235d37de8097b71c563ec8b63b7a515c718"
VOCAB_BYTES = 907_395

# Language codes in the model's order: index = lang_embedding row. Only the first ``N_LANGUAGE_TAGS`` have a
# special token ``<|code|>``; the rest (Chinese dialects and mixed codes) are plain text to the tokenizer.
LANGUAGE_CODES: tuple[str, ...] = tuple(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la "
    "mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be "
    "tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue minnan wuyu dialect "
    "zh/en en/zh common"
    .split()
)
N_LANGUAGE_TAGS = 99
FALLBACK_LANGUAGE = "common"

_AUDIO_EVENTS = ("ASR", "AED", "SER", "Speech", "/Speech", "BGM", "/BGM", "Laughter", "/Laughter", "Applause",
                 "/Applause")
_EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
_TASKS = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")
_TTS_TAGS = ("TTS/B", "TTS/O", "TTS/Q", "TTS/A", "TTS/CO", "TTS/CL", "TTS/H", *(f"TTS/SP{i:02d}" for i in range(1, 14)))

# Whisper / GPT-2 style pre-tokenizer (digit runs are not limited in length).
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def special_tokens() -> list[str]:
    """The special token strings in id order (the first gets the id right after the last mergeable rank)."""
    inner = [
        "endoftext", "startoftranscript", *LANGUAGE_CODES[:N_LANGUAGE_TAGS], *_AUDIO_EVENTS, *_EMOTIONS, *_TASKS,
        *(f"SPECIAL_TOKEN_{i}" for i in range(1, 31)), *_TTS_TAGS, *(f"{i * 0.02:.2f}" for i in range(1501)),
    ]  # fmt: skip
    return [f"<|{name}|>" for name in inner]


def lang_index(lang: str) -> int:
    """Row of the GPT's lang_embedding for ``lang`` (case-insensitive; unknown codes -> ``common``)."""
    code = lang.lower()
    return LANGUAGE_CODES.index(code if code in LANGUAGE_CODES else FALLBACK_LANGUAGE)


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"cannot read the 2.5 vocabulary {path}: {exc}; download the model again") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            token, rank = fields
            # Decoded as upstream does (one line is a lone '=', an empty token at its rank).
            ranks[base64.b64decode(token)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(
                f"2.5 vocabulary {path}, line {number}: expected '<base64> <rank>', got {line[:40]!r}; "
                "the file is corrupt, download the model again"
            ) from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"2.5 vocabulary {path}: ranks are not 0..{len(ranks) - 1}; download the model again")
    return ranks


@dataclass(frozen=True)
class V25Tokenizer:
    """``encode`` (specials allowed anywhere) and ``pieces`` over the 2.5 vocabulary."""

    path: Path
    n_ranks: int
    specials: dict[str, int]
    _encoding: object  # tiktoken.Encoding (typed loosely: tiktoken ships no stubs for every version)

    @property
    def n_vocab(self) -> int:
        return self.n_ranks + len(self.specials)

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode(text, allowed_special="all")  # type: ignore[attr-defined]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def token_bytes(self, ids: list[int]) -> list[bytes]:
        return [self._encoding.decode_single_token_bytes(i) for i in ids]  # type: ignore[attr-defined]

    def pieces(self, ids: list[int]) -> list[str]:
        """Each id's bytes as text; bytes of a partial UTF-8 character appear as ``\\xNN``."""
        return [b.decode("utf-8", errors="backslashreplace") for b in self.token_bytes(ids)]


@lru_cache(maxsize=4)
def load_tokenizer(path: str | Path) -> V25Tokenizer:
    """Load the vocabulary file (cached per path; the object is immutable)."""
    import tiktoken

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(
            f"2.5 vocabulary {path} does not exist; the IndexTTS-2.5 model folder must contain {VOCAB_FILE}"
        )
    ranks = _read_ranks(path)
    specials = {token: len(ranks) + i for i, token in enumerate(special_tokens())}
    encoding = tiktoken.Encoding(
        name=path.name, pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials,
        explicit_n_vocab=len(ranks) + len(specials),
    )
    return V25Tokenizer(path, len(ranks), specials, encoding)
