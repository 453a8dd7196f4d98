"""Audio playback through sounddevice with a position for the waveform cursor.

The player keeps the clip at the output device's native rate (resampled once with soxr), plays it
from an explicit :class:`sounddevice.OutputStream` callback, and can be fed more audio while playing
(streaming playback of the engine's chunks as they arrive, or of a project's takes). Fed audio goes through one
streaming resampler, so a clip fed in pieces plays exactly the samples the whole clip would.
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
        self._resampler: Any = None  # soxr.ResampleStream for the fed pieces while open-ended (rates differ)
        self._source: list[np.ndarray] = []  # the clip as given (load + append), at self._src_rate
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
        self._source = [np.asarray(audio).reshape(-1)]
        self._resampler = None
        if open_ended and sample_rate != self._rate:
            self._resampler = soxr.ResampleStream(sample_rate, self._rate, 1, dtype="float32", quality="HQ")
            first = self._resampler.resample_chunk(to_float(audio))
        else:
            first = self._to_device_rate(audio, sample_rate)
        with self._lock:
            self._buf = first
            self._pos = 0
            self._open_ended = open_ended

    def append(self, audio: np.ndarray, sample_rate: int, last: bool = False) -> None:
        """More of an open-ended clip; ``last``: nothing more comes. At the rate it was loaded with, the pieces go
        through the clip's streaming resampler; a piece at another rate is resampled on its own."""
        self._source.append(np.asarray(audio).reshape(-1))
        if self._resampler is not None and sample_rate == self._src_rate:
            chunk = self._resampler.resample_chunk(to_float(audio), last=last)
            if last:
                self._resampler = None
        else:
            chunk = np.concatenate([self._drain(), self._to_device_rate(audio, sample_rate)])
        with self._lock:
            self._buf = np.concatenate([self._buf, chunk])
            self._open_ended = not last

    def close_stream_input(self) -> None:
        """Nothing more will be appended: the resampler's last samples are added, playback ends after them."""
        tail = self._drain()
        with self._lock:
            self._buf = np.concatenate([self._buf, tail])
            self._open_ended = False

    def _drain(self) -> np.ndarray:
        """The samples the streaming resampler still holds (it is done with)."""
        resampler, self._resampler = self._resampler, None
        if resampler is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32)

    @property
    def source(self) -> np.ndarray:
        """The clip as it was given (loaded and appended), at its own rate: what the speaker is playing."""
        return np.concatenate(self._source) if self._source else np.zeros(0, dtype=np.int16)

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
