"""Encoding int16 mono speech for HTTP responses: whole files, and streams that grow segment by segment.

Formats (OpenAI's names): ``wav``, ``mp3`` (constant bit rate), ``flac``, ``opus`` (Ogg Opus) and ``pcm``
(raw signed 16-bit little-endian samples, no header). Everything is at the engine's 22050 Hz except Opus, which
has no 22.05 kHz mode: it is resampled (soxr) to 24 kHz, the nearest rate Opus carries.

A :class:`StreamEncoder` turns chunks into bytes that can be sent at once: WAV gets a header with "unknown
length" sizes, MP3 drops the placeholder Info frame the encoder only fills in at the end, FLAC's stream info
says "length unknown". Every such stream decodes to the same samples as the whole file (MP3 and Opus up to
their coding).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from ..api import SAMPLE_RATE

OPUS_RATE = 24000
_MP3_QUALITY = 0.5  # libsndfile compression level for MP3: about 80 kbit/s at 22050 Hz
# MPEG-2 layer III bit rates (kbit/s) by header index: the engine's 22050 Hz is an MPEG-2 rate.
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    sample_rate: int
    container: str | None = None  # libsndfile format, None for the hand-made wav stream / raw pcm
    subtype: str | None = None


FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("mp3", "audio/mpeg", SAMPLE_RATE, "MP3", "MPEG_LAYER_III"),
    "opus": AudioFormat("opus", "audio/ogg; codecs=opus", OPUS_RATE, "OGG", "OPUS"),
    "flac": AudioFormat("flac", "audio/flac", SAMPLE_RATE, "FLAC", "PCM_16"),
    "wav": AudioFormat("wav", "audio/wav", SAMPLE_RATE, "WAV", "PCM_16"),
    "pcm": AudioFormat("pcm", "audio/pcm", SAMPLE_RATE),
}


def _open(fmt: AudioFormat, buf: io.BytesIO):
    import soundfile as sf

    extra = {"bitrate_mode": "CONSTANT", "compression_level": _MP3_QUALITY} if fmt.name == "mp3" else {}
    return sf.SoundFile(buf, "w", fmt.sample_rate, 1, fmt.subtype, format=fmt.container, **extra)


def _as_int16(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(audio, dtype=np.int16).reshape(-1))


def encode(audio: np.ndarray, name: str) -> bytes:
    """A complete file of int16 mono ``audio`` (22050 Hz) in the format ``name``."""
    fmt = FORMATS[name]
    pcm = _as_int16(audio)
    if fmt.container is None:
        return pcm.astype("<i2").tobytes()
    if fmt.sample_rate != SAMPLE_RATE:
        import soxr

        pcm = soxr.resample(pcm, SAMPLE_RATE, fmt.sample_rate, quality="HQ")
    buf = io.BytesIO()
    with _open(fmt, buf) as out:
        out.write(pcm)
    return buf.getvalue()


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
        if self.format.container is not None and self.format.name != "wav":
            self._buf = io.BytesIO()
            self._file = _open(self.format, self._buf)
        if self.format.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(SAMPLE_RATE, self.format.sample_rate, 1, dtype="int16")
        self._started = False

    def header(self) -> bytes:
        return wav_stream_header(self.format.sample_rate) if self.format.name == "wav" else b""

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
