"""The audio formats every front end writes (the GUI's Save as, ``synth --out``, project exports, the local API):
WAV, FLAC, MP3 and Opus through libsndfile, from one table and one encoder.

WAV and FLAC are 16-bit PCM, MP3 is constant bit rate (libsndfile's LAME), Opus is Ogg Opus at 48 kHz: Opus has
no 22.05 kHz mode, so the audio is resampled (soxr) for it. Every other format keeps the audio's own rate.
Decoded again, WAV, FLAC and MP3 give exactly the samples' count that was written (libsndfile writes MP3 with its
encoder delay recorded), Opus the same duration at 48 kHz.

    with AudioWriter(path_or_buffer, FORMATS["mp3"], 22050) as out:
        out.write(int16_chunk)   # as often as needed
    write_audio(Path("speech.flac"), audio, 22050)   # atomic, the format from the extension
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from .api import SAMPLE_RATE, EngineError

OPUS_RATE = 48000
MP3_QUALITY = 0.5  # libsndfile compression level for MP3: about 80 kbit/s at 22050 Hz


@dataclass(frozen=True)
class AudioFormat:
    name: str  # also the file extension without the dot
    label: str  # for file dialogs: "FLAC audio"
    media_type: str
    container: str | None  # libsndfile major format; None for raw PCM (the local API's "pcm")
    subtype: str | None = None
    fixed_rate: int | None = None  # the only rate the codec carries (Opus)

    @property
    def extension(self) -> str:
        return "." + self.name

    def rate_for(self, rate: int) -> int:
        """The rate a file of this format gets for audio at ``rate``."""
        return self.fixed_rate or rate


# Order as the local API lists them (OpenAI's order); FILE_FORMATS are those a file on disk can have.
FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("mp3", "MP3 audio", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
    "opus": AudioFormat("opus", "Opus audio", "audio/ogg; codecs=opus", "OGG", "OPUS", OPUS_RATE),
    "flac": AudioFormat("flac", "FLAC audio", "audio/flac", "FLAC", "PCM_16"),
    "wav": AudioFormat("wav", "WAV audio", "audio/wav", "WAV", "PCM_16"),
    "pcm": AudioFormat("pcm", "raw PCM", "audio/pcm", None),
}
FILE_FORMATS: tuple[str, ...] = ("wav", "flac", "mp3", "opus")


def format_for(path: str | Path) -> AudioFormat:
    """The file format named by ``path``'s extension, or an EngineError listing the extensions there are."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in FILE_FORMATS:
        allowed = ", ".join("." + name for name in FILE_FORMATS)
        raise EngineError(f"Cannot write audio to {Path(path).name}: the name must end in {allowed}.")
    return FORMATS[ext]


def as_int16(audio: np.ndarray) -> np.ndarray:
    """``audio`` as contiguous int16 mono; float audio is taken as -1..1."""
    a = np.asarray(audio).reshape(-1)
    if a.dtype.kind == "f":
        a = np.clip(np.round(a * 32767.0), -32768, 32767)
    return np.ascontiguousarray(a, dtype=np.int16)


def open_soundfile(target: str | Path | BinaryIO, fmt: AudioFormat, rate: int) -> Any:
    """A libsndfile writer of ``fmt`` at ``rate`` (already the format's rate), mono."""
    import soundfile as sf

    if fmt.container is None:
        raise ValueError(f"{fmt.name} is not a file format")
    extra = {"bitrate_mode": "CONSTANT", "compression_level": MP3_QUALITY} if fmt.name == "mp3" else {}
    return sf.SoundFile(target if isinstance(target, io.IOBase) else str(target), "w", rate, 1, fmt.subtype,
                        format=fmt.container, **extra)


class AudioWriter:
    """int16 chunks at ``rate`` in, a ``fmt`` file (or buffer) out, resampled when the format needs another rate."""

    def __init__(self, target: str | Path | BinaryIO, fmt: AudioFormat, rate: int) -> None:
        self.format = fmt
        self.rate = fmt.rate_for(rate)
        self._resampler = None
        if self.rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="int16", quality="HQ")
        self._file = open_soundfile(target, fmt, self.rate)

    def write(self, audio: np.ndarray) -> None:
        pcm = as_int16(audio)
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        if pcm.size:
            self._file.write(pcm)

    def close(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._resampler = None
            if tail.size:
                self._file.write(tail)
        self._file.close()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()


def encode(audio: np.ndarray, name: str, rate: int = SAMPLE_RATE) -> bytes:
    """A complete file of mono ``audio`` at ``rate`` in the format ``name`` (raw little-endian samples for pcm)."""
    fmt = FORMATS[name]
    if fmt.container is None:
        return as_int16(audio).astype("<i2").tobytes()
    buf = io.BytesIO()
    with AudioWriter(buf, fmt, rate) as out:
        out.write(audio)
    return buf.getvalue()


def write_audio(path: str | Path, audio: np.ndarray, rate: int, *, overwrite: bool = False,
                durable: bool = False) -> Path:
    """Write ``audio`` to ``path`` in the format its extension names, atomically (``core.files.write_atomic``: a
    temp file renamed into place; never clobbers unless ``overwrite``). Every failure is an EngineError."""
    from .files import write_atomic

    fmt = format_for(path)

    def write(tmp: Path) -> None:
        with AudioWriter(tmp, fmt, rate) as out:
            out.write(audio)

    try:
        return write_atomic(Path(path), write, overwrite=overwrite, durable=durable)
    except (RuntimeError, ValueError) as exc:  # libsndfile refused the audio
        if isinstance(exc, EngineError):
            raise
        raise EngineError(f"Could not encode {Path(path).name}: {exc}.") from exc
