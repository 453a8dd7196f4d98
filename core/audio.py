"""Reference-clip loading: decode, mix to mono, resample, cap at 15 s: what IndexTTS-2 does before any model.

Speaker clip (``load_speaker_audio``)::

    decode (libsndfile, float32 [C, n]) -> float32 channel mean -> soxr HQ to 22050 Hz -> pad/trim to
    ceil(n * 22050 / sr) -> first 15 s  = audio_22k
    audio_22k -> windowed-sinc resampler 22050 -> 16000 (torchaudio's algorithm)  = audio_16k

Emotion clip (``load_emotion_audio``): the same decode and mix, soxr HQ straight to 16000 Hz, pad/trim, first 15 s.

The 15 s cap is applied after resampling, so the samples just before the cut see the audio after it (the
resampler's filter reaches a few milliseconds ahead); we therefore decode a margin past the cap.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

log = logging.getLogger(__name__)

SPEAKER_SR = 22050
EMOTION_SR = 16000
W2V_SR = 16000
MAX_SECONDS = 15.0
MIN_SECONDS = 0.5
# The emotion prompt only steers emotion, and upstream's own example emo_hate.wav lasts 0.47 s: accept it.
EMOTION_MIN_SECONDS = 0.25
SILENCE_PEAK = 1e-4
# Audio decoded past the cap so that the resampled samples just before the cut are exact (soxr HQ's filter
# spans far less than this).
_DECODE_MARGIN_SECONDS = 2.0

_FORMATS_HINT = "Use a WAV, FLAC, OGG or MP3 recording of clear speech (3 to 15 seconds works best)."


class AudioError(ValueError):
    """A reference clip cannot be used: missing, empty, not audio, corrupt, silent or too short."""


@dataclass(frozen=True)
class SpeakerAudio:
    """The speaker clip at the two rates the models need, each [1, n] float32."""

    audio_22k: torch.Tensor
    audio_16k: torch.Tensor


@dataclass(frozen=True)
class DecodedAudio:
    """A clip as libsndfile decodes it: ``samples`` is [channels, frames] float32 (possibly only a prefix)."""

    samples: np.ndarray
    sample_rate: int
    total_frames: int


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"Audio file not found: {path}. Check the path or choose another file. {_FORMATS_HINT}")
    if not path.is_file():
        raise AudioError(f"Not a file: {path}. Choose an audio file, not a folder. {_FORMATS_HINT}")
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file is empty (0 bytes): {path}. Record or export the clip again. {_FORMATS_HINT}")


def decode_audio(path: str | Path, max_seconds: float | None = None) -> DecodedAudio:
    """Decode with libsndfile to float32 [channels, frames] (PCM16 / 32768, PCM24 / 2**23, float as is).

    ``max_seconds`` limits how much is read (the file's full length is still reported in ``total_frames``).
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            sample_rate = int(f.samplerate)
            total = int(f.frames)
            want = total if max_seconds is None else min(total, int(math.ceil(max_seconds * sample_rate)))
            data = f.read(frames=want, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(
            f"Cannot read {path} as audio ({exc}). The file is not audio or is corrupt or truncated; "
            f"re-export it from an audio editor. {_FORMATS_HINT}"
        ) from exc
    if sample_rate <= 0:
        raise AudioError(f"Audio file {path} reports an invalid sample rate ({sample_rate}). {_FORMATS_HINT}")
    if data.shape[0] == 0 or total == 0:
        raise AudioError(f"Audio file has no samples: {path}. Record or export the clip again. {_FORMATS_HINT}")
    samples = np.ascontiguousarray(data.T)
    if not np.isfinite(samples).all():
        raise AudioError(f"Audio file {path} contains invalid (NaN or infinite) samples; it is corrupt. "
                         f"Re-export it from an audio editor. {_FORMATS_HINT}")
    return DecodedAudio(samples=samples, sample_rate=sample_rate, total_frames=total)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Float32 mean over channels of [channels, frames] -> [frames] (for stereo exactly (L + R) / 2 in float32)."""
    if samples.shape[0] == 1:
        return samples[0]
    # Average over an interleaved [frames, channels] buffer, the layout librosa reduces over, so that the
    # float32 summation order is the same for any channel count.
    return np.ascontiguousarray(samples.T).mean(axis=1, dtype=np.float32)


def resample_soxr(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr HQ resampling of a 1-D float32 signal, then zero-pad / trim to ceil(n * target_sr / orig_sr)."""
    if orig_sr == target_sr:
        return wave
    out = soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), orig_sr, target_sr, quality="HQ")
    n_out = int(math.ceil(wave.shape[-1] * (float(target_sr) / orig_sr)))
    if out.shape[-1] >= n_out:
        return out[:n_out]
    return np.concatenate([out, np.zeros(n_out - out.shape[-1], dtype=out.dtype)])


def load_audio(
    path: str | Path, sr: int, max_seconds: float = MAX_SECONDS, min_seconds: float = MIN_SECONDS
) -> torch.Tensor:
    """Decode, mix to mono, soxr HQ to ``sr``, pad/trim, keep the first ``max_seconds``: [1, n] float32.

    Raises :class:`AudioError` for a missing, empty, unreadable, silent or too short (< ``min_seconds``) file.
    """
    path = Path(path)
    cap = int(max_seconds * sr)
    # Read the cap plus a margin only: a long file's tail cannot change the kept samples.
    decoded = decode_audio(path, max_seconds=max_seconds + _DECODE_MARGIN_SECONDS)
    duration = decoded.total_frames / decoded.sample_rate
    if duration < min_seconds:
        raise AudioError(
            f"Audio clip is too short ({duration:.2f} s): {path}. Use at least {min_seconds} s of speech "
            f"(3 to 15 seconds works best)."
        )
    mono = to_mono(decoded.samples)
    wave = resample_soxr(mono, decoded.sample_rate, sr)
    if wave.shape[-1] > cap:
        log.debug("%s: %d samples at %d Hz, keeping the first %d", path, wave.shape[-1], sr, cap)
        wave = wave[:cap]
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"Audio clip is silent (peak level {peak:.1e}): {path}. Choose a recording of a voice, "
            f"or check the microphone level."
        )
    return torch.from_numpy(np.array(wave, dtype=np.float32, copy=True)).unsqueeze(0)


@functools.lru_cache(maxsize=8)
def sinc_resample_kernel(
    orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc polyphase kernel [new, 1, 2 * width + orig] (rates reduced by their gcd) and width.

    Same numbers as torchaudio's ``sinc_interp_hann`` kernel: built in float64, except that the output-phase
    offsets j / new are formed in float32, then cast to float32.
    """
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phases = (torch.arange(0, -new, -1)[:, None, None] / new).to(torch.float32)  # float32 on purpose
    t = (phases + taps) * base
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones((), dtype=t.dtype), torch.sin(t) / t)
    kernel = sinc * (window * (base / orig))
    return kernel.to(torch.float32), width


def resample_sinc(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited windowed-sinc resampling of [..., n] (torchaudio ``Resample`` defaults)."""
    if orig_sr == new_sr:
        return wave
    kernel, width = sinc_resample_kernel(orig_sr, new_sr)
    kernel = kernel.to(wave.device)
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1]).to(torch.float32)
    n = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)  # [b, new, blocks]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * n / orig)
    return out[:, :target].reshape(*shape[:-1], -1)


def resample_22k_to_16k(wave: torch.Tensor) -> torch.Tensor:
    """The speaker clip's second resampling: [1, n] at 22.05 kHz -> [1, ceil(320 n / 441)] at 16 kHz."""
    return resample_sinc(wave, SPEAKER_SR, W2V_SR)


def load_speaker_audio(path: str | Path) -> SpeakerAudio:
    """The speaker prompt: 22.05 kHz (soxr HQ, 15 s cap) and its 16 kHz sinc resampling."""
    audio_22k = load_audio(path, SPEAKER_SR)
    return SpeakerAudio(audio_22k=audio_22k, audio_16k=resample_22k_to_16k(audio_22k))


def load_emotion_audio(path: str | Path) -> torch.Tensor:
    """The emotion prompt: soxr HQ straight to 16 kHz, 15 s cap: [1, n] float32."""
    return load_audio(path, EMOTION_SR, min_seconds=EMOTION_MIN_SECONDS)
