"""Split a token sequence into segments of at most ``max_tokens`` (upstream ``TextTokenizer.split_segments``).

Quirks kept on purpose (the model was run this way): a closing quote after a sentence mark is copied into the
closed segment *and* starts the next one, and a segment can be one token over the limit when a mark arrives at
exactly ``max_tokens``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SENTENCE_MARKS = (".", "!", "?", "▁.", "▁?", "▁...")
COMMA_MARKS = (",", "▁,")
DASH_MARKS = ("-",)
QUOTES = ("'", "▁'")


def _split(tokens: list[str], marks: tuple[str, ...], max_tokens: int, quick_streaming_tokens: int) -> list[list[str]]:
    if not tokens:
        return []
    segments: list[list[str]] = []
    current: list[str] = []
    for i, token in enumerate(tokens):
        current.append(token)
        if not ("," in marks or "▁," in marks) and ("," in current or "▁," in current):
            parts = _split(current, COMMA_MARKS, max_tokens, quick_streaming_tokens)
        elif "-" not in marks and "-" in current:
            parts = _split(current, DASH_MARKS, max_tokens, quick_streaming_tokens)
        elif len(current) <= max_tokens:
            if token in marks and len(current) > 2:
                if i + 1 < len(tokens) and tokens[i + 1] in QUOTES:
                    current.append(tokens[i + 1])  # also starts the next segment (upstream quirk)
                segments.append(current)
                current = []
            continue
        else:
            log.debug("segment of %d tokens cut by length at %d", len(current), max_tokens)
            parts = [current[j : j + max_tokens] for j in range(0, len(current), max_tokens)]
        segments.extend(parts)
        current = []
    if current:
        segments.append(current)

    merged: list[list[str]] = []
    total = 0
    for segment in segments:
        total += len(segment)
        if not segment:
            continue
        if not merged:
            merged.append(segment)
        elif len(merged[-1]) + len(segment) <= max_tokens and total > quick_streaming_tokens:
            merged[-1] = merged[-1] + segment
        elif len(merged[-1]) + len(segment) <= max_tokens / 2:
            merged[-1] = merged[-1] + segment
        else:
            merged.append(segment)
    return merged


def split_segments(
    tokens: list[str], max_text_tokens_per_segment: int = 120, quick_streaming_tokens: int = 0
) -> list[list[str]]:
    """Split ``tokens`` at sentence marks (then commas, then ``-``, then by length) and merge short neighbours."""
    if isinstance(max_text_tokens_per_segment, bool) or not isinstance(max_text_tokens_per_segment, int):
        raise ValueError(f"max_text_tokens_per_segment must be an integer, got {max_text_tokens_per_segment!r}")
    if max_text_tokens_per_segment < 1:
        raise ValueError(f"max_text_tokens_per_segment must be at least 1, got {max_text_tokens_per_segment}")
    if quick_streaming_tokens < 0:
        raise ValueError(f"quick_streaming_tokens must be >= 0, got {quick_streaming_tokens}")
    return _split(list(tokens), SENTENCE_MARKS, max_text_tokens_per_segment, quick_streaming_tokens)
