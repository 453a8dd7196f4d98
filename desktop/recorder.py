"""Microphone recording: the input opens at the device's native rate, the take is resampled with soxr.

:class:`Recorder` collects float32 blocks from a PortAudio callback and keeps a live peak level for the
meter. :func:`finish_take` trims leading/trailing silence, resamples and returns quality warnings.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

from core.api import SAMPLE_RATE
from desktop.audio import AudioUnavailable, Device, pick_device, sounddevice

log = logging.getLogger(__name__)

MIN_SECONDS = 3.0
MAX_SECONDS = 20.0
LIMIT_SECONDS = 60.0  # recording stops by itself after this
QUIET_PEAK = 0.05  # -26 dBFS
CLIP_LEVEL = 0.99


@dataclass
class Take:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


class Recorder:
    """One recording from one input device."""

    def __init__(self, device_name: str = "") -> None:
        self.device_name = device_name
        self.device: Device | None = None
        self._blocks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._stream: Any = None  # a sounddevice.InputStream while recording
        self.level = 0.0  # peak of the latest block, 0..1
        self.frames = 0
        self.status_flags: list[str] = []

    @property
    def recording(self) -> bool:
        return self._stream is not None

    @property
    def seconds(self) -> float:
        return self.frames / self.device.samplerate if self.device else 0.0

    def start(self) -> Device:
        sd = sounddevice()
        self.device = pick_device("input", self.device_name)
        rate = int(self.device.samplerate)

        def callback(indata, frames, time_info, status) -> None:  # PortAudio thread
            if status:
                self.status_flags.append(str(status))
            block = indata[:, 0].copy()
            with self._lock:
                self._blocks.append(block)
                self.frames += frames
            self.level = float(np.max(np.abs(block))) if frames else 0.0

        try:
            self._stream = sd.InputStream(
                device=self.device.index, samplerate=rate, channels=1, dtype="float32", callback=callback
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise AudioUnavailable(f"Could not open the microphone '{self.device.name}': {exc}.") from exc
        log.info("recording from %s at %d Hz", self.device.label, rate)
        return self.device

    def stop(self) -> tuple[np.ndarray, int]:
        """Stop and return (float32 audio at the native rate, native rate)."""
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None
        with self._lock:
            audio = np.concatenate(self._blocks) if self._blocks else np.zeros(0, dtype=np.float32)
        rate = int(self.device.samplerate) if self.device else SAMPLE_RATE
        log.info("recorded %.2f s (%s)", len(audio) / rate, ", ".join(self.status_flags) or "no xruns")
        return audio, rate


def trim_silence(
    audio: np.ndarray, sample_rate: int, threshold_db: float = -40.0, pad_seconds: float = 0.1
) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``threshold_db`` below the peak (20 ms windows), keep a pad."""
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak <= 0:
        return audio[:0]
    win = max(1, int(0.02 * sample_rate))
    n = len(audio) // win
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win).astype(np.float64) ** 2, axis=1))
    loud = np.nonzero(rms > peak * 10 ** (threshold_db / 20))[0]
    if loud.size == 0:
        return audio[:0]
    pad = int(pad_seconds * sample_rate)
    start = max(0, loud[0] * win - pad)
    end = min(len(audio), (loud[-1] + 1) * win + pad)
    return audio[start:end]


def take_warnings(audio: np.ndarray, sample_rate: int) -> list[str]:
    """Quality warnings in words: too quiet, clipped, too short, too long."""
    warnings = []
    seconds = len(audio) / sample_rate if sample_rate else 0.0
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < QUIET_PEAK:
        warnings.append("Very quiet: speak closer to the microphone or raise its input level.")
    clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if audio.size else 0.0
    if clipped > 0.001:
        warnings.append(
            f"Clipped ({clipped:.1%} of samples at full scale): lower the input level or move back a little."
        )
    if seconds < MIN_SECONDS:
        warnings.append(f"Too short ({seconds:.1f} s): record at least {MIN_SECONDS:.0f} seconds of speech.")
    elif seconds > MAX_SECONDS:
        warnings.append(f"Long ({seconds:.0f} s): 5-15 seconds of clean speech clone best; only the start may be used.")
    return warnings


def finish_take(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE, trim: bool = True) -> Take:
    """Trim silence, resample to ``target_rate`` with soxr, and attach quality warnings."""
    audio = np.asarray(audio, dtype=np.float32)
    if trim:
        audio = trim_silence(audio, sample_rate)
    if sample_rate != target_rate and audio.size:
        audio = soxr.resample(audio, sample_rate, target_rate, quality="HQ").astype(np.float32)
    return Take(audio=audio, sample_rate=target_rate, warnings=take_warnings(audio, target_rate))
