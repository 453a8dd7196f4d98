"""Audio playback through sounddevice with a position for the waveform cursor.

The player keeps the clip at the output device's native rate (resampled once with soxr), plays it
from an explicit :class:`sounddevice.OutputStream` callback, and can be fed more audio while playing
(streaming playback of segments as the engine produces them).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import soxr

from desktop.audio import AudioUnavailable, Device, pick_device, sounddevice

log = logging.getLogger(__name__)


def to_float(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return (a.astype(np.float32) / 32768.0).reshape(-1)
    return a.astype(np.float32).reshape(-1)


class Player:
    def __init__(self, device_name: str = "") -> None:
        self.device_name = device_name
        self.device: Device | None = None
        self._lock = threading.Lock()
        self._buf = np.zeros(0, dtype=np.float32)  # at self._rate
        self._rate = 0
        self._src_rate = 0
        self._pos = 0
        self._stream: Any = None  # a sounddevice.OutputStream while playing
        self._open_ended = False  # True while a streaming synthesis may still append audio
        self.finished = threading.Event()

    # --- content -------------------------------------------------------------------------------------------
    def _prepare_device(self) -> Device:
        if self.device is None:
            self.device = pick_device("output", self.device_name)
        return self.device

    def _to_device_rate(self, audio: np.ndarray, rate: int) -> np.ndarray:
        a = to_float(audio)
        if rate != self._rate and a.size:
            a = soxr.resample(a, rate, self._rate, quality="HQ").astype(np.float32)
        return a

    def load(self, audio: np.ndarray, sample_rate: int, open_ended: bool = False) -> None:
        """Replace the clip (stops playback). ``open_ended``: more audio will come through :meth:`append`."""
        self.stop()
        self._rate = int(self._prepare_device().samplerate)
        self._src_rate = sample_rate
        with self._lock:
            self._buf = self._to_device_rate(audio, sample_rate)
            self._pos = 0
            self._open_ended = open_ended

    def append(self, audio: np.ndarray, sample_rate: int, last: bool = False) -> None:
        chunk = self._to_device_rate(audio, sample_rate)
        with self._lock:
            self._buf = np.concatenate([self._buf, chunk])
            self._open_ended = not last

    def close_stream_input(self) -> None:
        with self._lock:
            self._open_ended = False

    # --- transport -----------------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._stream is not None and self._stream.active

    @property
    def duration(self) -> float:
        return len(self._buf) / self._rate if self._rate else 0.0

    @property
    def position(self) -> float:
        return self._pos / self._rate if self._rate else 0.0

    def seek(self, seconds: float) -> None:
        with self._lock:
            self._pos = int(min(max(0.0, seconds), self.duration) * self._rate)

    def play(self) -> None:
        if self.playing:
            return
        sd = sounddevice()
        device = self._prepare_device()
        if self._pos >= len(self._buf) and not self._open_ended:
            self._pos = 0
        self.finished.clear()

        def callback(outdata, frames, time_info, status) -> None:  # PortAudio thread
            with self._lock:
                chunk = self._buf[self._pos : self._pos + frames]
                self._pos += len(chunk)
                done = self._pos >= len(self._buf) and not self._open_ended
            outdata[: len(chunk), 0] = chunk
            outdata[len(chunk) :, 0] = 0.0
            if done:
                raise sd.CallbackStop

        try:
            self._stream = sd.OutputStream(
                device=device.index,
                samplerate=self._rate,
                channels=1,
                dtype="float32",
                callback=callback,
                finished_callback=self.finished.set,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            raise AudioUnavailable(f"Could not play on '{device.name}': {exc}.") from exc

    def pause(self) -> None:
        self._close_stream()

    def stop(self) -> None:
        self._close_stream()
        with self._lock:
            self._pos = 0

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # PortAudio may already have closed it
                log.debug("closing the output stream failed", exc_info=True)
