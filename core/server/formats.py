"""Encoding int16 mono speech for HTTP responses: whole files, and streams that grow segment by segment.

Formats (OpenAI's names): ``wav``, ``mp3`` (constant bit rate), ``flac``, ``opus`` (Ogg Opus) and ``pcm``
(raw signed 16-bit little-endian samples, no header), from the one table and encoder of :mod:`core.audio_formats`
(Opus resampled to 48 kHz, everything else at the engine's 22050 Hz).

A :class:`StreamEncoder` turns chunks into bytes that can be sent at once: WAV gets a header with "unknown
length" sizes, MP3 drops the placeholder Info frame the encoder only fills in at the end, FLAC's stream info
says "length unknown". Every such stream decodes to the same samples as the whole file (MP3 and Opus up to
their coding).
"""

from __future__ import annotations

import io
import struct

import numpy as np

from ..api import SAMPLE_RATE
from ..audio_formats import FORMATS, OPUS_RATE, AudioFormat, encode, open_soundfile
from ..audio_formats import as_int16 as _as_int16

__all__ = ["FORMATS", "OPUS_RATE", "AudioFormat", "StreamEncoder", "encode", "wav_stream_header"]

# MPEG-2 layer III bit rates (kbit/s) by header index: the engine's 22050 Hz is an MPEG-2 rate.
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit mono WAV header whose RIFF and data sizes say "unknown" (0xFFFFFFFF), for a stream."""
    fmt_chunk = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk))
            + fmt_chunk + b"data" + struct.pack("<I", 0xFFFFFFFF))


def _mp3_frame_length(data: bytes) -> int:
    """Length in bytes of the MPEG-2 layer III frame at the start of ``data`` (0 when it is not one)."""
    if len(data) < 4 or data[0] != 0xFF or (data[1] & 0xFE) != 0xF2:  # sync, MPEG-2, layer III
        return 0
    index, rate_index, padding = data[2] >> 4, (data[2] >> 2) & 3, (data[2] >> 1) & 1
    rate = (22050, 24000, 16000, 0)[rate_index]
    if not 0 < index < len(_MPEG2_L3_KBPS) or not rate:
        return 0
    return 72 * _MPEG2_L3_KBPS[index] * 1000 // rate + padding


class StreamEncoder:
    """``feed(chunk)`` / ``close()`` return the bytes to send next; together they form one playable stream."""

    def __init__(self, name: str) -> None:
        self.format = FORMATS[name]
        self._buf: io.BytesIO | None = None
        self._file = None
        self._sent = 0
        self._resampler = None
        self._skip = 0  # MP3: bytes of the placeholder Info frame, dropped once it has been written
        rate = self.format.rate_for(SAMPLE_RATE)
        if self.format.container is not None and self.format.name != "wav":
            self._buf = io.BytesIO()
            self._file = open_soundfile(self._buf, self.format, rate)
        if rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="int16")
        self._started = False

    def header(self) -> bytes:
        return wav_stream_header(self.format.rate_for(SAMPLE_RATE)) if self.format.name == "wav" else b""

    def feed(self, audio: np.ndarray) -> bytes:
        pcm = _as_int16(audio)
        head = b"" if self._started else self.header()
        self._started = True
        if self._file is None:
            return head + pcm.astype("<i2").tobytes()
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        if pcm.size:
            self._file.write(pcm)
        return head + self._drain()

    def close(self) -> bytes:
        if self._file is None:
            return b"" if self._started else self.header()
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            if tail.size:
                self._file.write(tail)
        self._file.close()  # rewrites headers at the start too: those bytes were sent already
        return self._drain(final=True)

    def _drain(self, final: bool = False) -> bytes:
        assert self._buf is not None
        data = self._buf.getvalue()
        if self.format.name == "mp3" and self._sent == 0 and not self._skip:
            self._skip = _mp3_frame_length(data)
            if not self._skip and not final:
                return b""  # not even the first frame yet
            self._sent = self._skip
        new = data[self._sent:]
        self._sent = len(data)
        return new
