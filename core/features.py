"""Spectral features of the reference clips, computed as upstream's libraries compute them.

* ``seamless_features``: w2v-BERT 2.0 input (transformers' SeamlessM4TFeatureExtractor with the w2v-bert-2.0
  preprocessor config): Kaldi-style 80-bin log-mel of the waveform scaled to int16 range, in float64; per-bin
  mean/variance normalisation; frame pairs stacked into 160-dim rows; odd frame counts padded with a frame of 1.0
  that the attention mask hides.
* ``kaldi_fbank`` / ``campplus_input``: torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0) of the
  unscaled 16 kHz waveform in float32, then minus its time mean (what CAMPPlus receives).
* ``mel_spectrogram``: the s2mel prompt mel: reflect pad, STFT magnitude, Slaney mel, log.

Filterbanks and windows are our own code, built once per parameter set (``lru_cache``).
"""

from __future__ import annotations

import functools
import math
import typing

import numpy as np
import torch

# Kaldi framing at 16 kHz: 25 ms windows every 10 ms, FFT size rounded up to a power of two.
FRAME_LENGTH = 400
FRAME_SHIFT = 160
FFT_SIZE = 512
PREEMPHASIS = 0.97
POVEY_POWER = 0.85
KALDI_LOW_HZ = 20.0
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.1920929e-07, Kaldi's log floor

# w2v-bert-2.0 preprocessor_config.json
SEAMLESS_MEL_BINS = 80
SEAMLESS_STRIDE = 2
SEAMLESS_PADDING_VALUE = 1.0
SEAMLESS_SAMPLE_RATE = 16000
SEAMLESS_VAR_EPS = 1e-7
# The extractor's mel floor is the literal 1.192092955078125e-07 (a digit short of float32 eps), kept as is.
SEAMLESS_MEL_FLOOR = 1.192092955078125e-07
INT16_SCALE = 32768.0

MEL_LOG_FLOOR = 1e-5
MAG_EPS = 1e-9


# ----------------------------------------------------------------------------------------------- mel scales


@typing.overload
def kaldi_mel(freq_hz: float) -> float: ...
@typing.overload
def kaldi_mel(freq_hz: np.ndarray) -> np.ndarray: ...
def kaldi_mel(freq_hz: np.ndarray | float) -> np.ndarray | float:
    """Kaldi / HTK mel scale 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq_hz, dtype=np.float64) / 700.0)


_SLANEY_F_SP = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def slaney_hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above."""
    f = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    mel = f / _SLANEY_F_SP
    high = f >= _SLANEY_LOG_HZ
    mel[high] = _SLANEY_LOG_MEL + np.log(f[high] / _SLANEY_LOG_HZ) / _SLANEY_LOGSTEP
    return mel


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    m = np.atleast_1d(np.asarray(mel, dtype=np.float64))
    f = _SLANEY_F_SP * m
    high = m >= _SLANEY_LOG_MEL
    f[high] = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m[high] - _SLANEY_LOG_MEL))
    return f


# ------------------------------------------------------------------------------------------- filterbanks


@functools.lru_cache(maxsize=8)
def slaney_mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Area-normalised triangular filters on the Slaney mel scale: [n_mels, n_fft // 2 + 1] float32.

    The same numbers as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)``:
    triangles in Hz between mel-spaced edges, stored in float32, then scaled by 2 / (right edge - left edge).
    """
    if fmax is None:
        fmax = sr / 2.0
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges_mel = np.linspace(slaney_hz_to_mel(fmin)[0], slaney_hz_to_mel(fmax)[0], n_mels + 2)
    edges_hz = slaney_mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    dist = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, bins]
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # float32 result, like librosa's in-place scaling
    return torch.from_numpy(weights)


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(
    num_bins: int = SEAMLESS_MEL_BINS,
    fft_size: int = FFT_SIZE,
    sample_rate: int = SEAMLESS_SAMPLE_RATE,
    low_hz: float = KALDI_LOW_HZ,
    high_hz: float = 0.0,
) -> torch.Tensor:
    """Kaldi mel triangles (built in mel space) over the fft_size / 2 non-Nyquist bins, float32 [num_bins, fft/2].

    Same arithmetic as torchaudio.compliance.kaldi.get_mel_banks without VTLN: edge mels in double precision,
    per-filter and per-bin values in float32. ``high_hz <= 0`` counts down from the Nyquist frequency.
    """
    nyquist = 0.5 * sample_rate
    if high_hz <= 0.0:
        high_hz += nyquist
    bin_hz = sample_rate / fft_size
    mel_low = 1127.0 * math.log(1.0 + low_hz / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_hz / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    fft_mel = 1127.0 * (1.0 + (bin_hz * torch.arange(fft_size // 2, dtype=torch.float32)) / 700.0).log()
    fft_mel = fft_mel.unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


@functools.lru_cache(maxsize=4)
def seamless_mel_filters(
    num_bins: int = SEAMLESS_MEL_BINS, fft_size: int = FFT_SIZE, sample_rate: int = SEAMLESS_SAMPLE_RATE
) -> np.ndarray:
    """Kaldi-scale mel triangles in mel space over all fft_size / 2 + 1 bins, float64 [bins, num_bins], unnormalised.

    transformers' ``mel_filter_bank(..., mel_scale="kaldi", triangularize_in_mel_space=True, norm=None)``
    between 20 Hz and the Nyquist frequency.
    """
    n_freq = fft_size // 2 + 1
    edges = np.linspace(kaldi_mel(KALDI_LOW_HZ), kaldi_mel(sample_rate // 2), num_bins + 2)
    bin_width = sample_rate / ((n_freq - 1) * 2)
    fft_mel = kaldi_mel(bin_width * np.arange(n_freq))
    widths = np.diff(edges)
    dist = edges[None, :] - fft_mel[:, None]  # [bins, num_bins + 2]
    rising = -dist[:, :-2] / widths[:-1]
    falling = dist[:, 2:] / widths[1:]
    return np.maximum(np.zeros(1), np.minimum(rising, falling))


@functools.lru_cache(maxsize=4)
def povey_window_np(length: int = FRAME_LENGTH) -> np.ndarray:
    """Symmetric Hann window to the power 0.85, float64 (numpy hanning)."""
    return np.hanning(length) ** POVEY_POWER


@functools.lru_cache(maxsize=4)
def povey_window_torch(length: int = FRAME_LENGTH) -> torch.Tensor:
    """Symmetric Hann window to the power 0.85, float32 (torch.hann_window(periodic=False))."""
    return torch.hann_window(length, periodic=False, dtype=torch.float32).pow(POVEY_POWER)


@functools.lru_cache(maxsize=4)
def hann_window(length: int) -> torch.Tensor:
    """Periodic Hann window, float32."""
    return torch.hann_window(length, dtype=torch.float32)


# ------------------------------------------------------------------------------------------- helpers


@typing.overload
def _as_1d(wave: torch.Tensor, what: str) -> torch.Tensor: ...
@typing.overload
def _as_1d(wave: np.ndarray, what: str) -> np.ndarray: ...
@typing.overload
def _as_1d(wave: torch.Tensor | np.ndarray, what: str) -> torch.Tensor | np.ndarray: ...
def _as_1d(wave: torch.Tensor | np.ndarray, what: str) -> torch.Tensor | np.ndarray:
    if wave.ndim == 2:
        if wave.shape[0] != 1:
            raise ValueError(f"{what} expects one mono waveform [1, n], got shape {tuple(wave.shape)}")
        wave = wave[0]
    if wave.ndim != 1:
        raise ValueError(f"{what} expects a waveform [1, n] or [n], got shape {tuple(wave.shape)}")
    if wave.shape[0] < FRAME_LENGTH:
        raise ValueError(f"{what}: waveform of {wave.shape[0]} samples is shorter than one {FRAME_LENGTH}-sample frame")
    return wave


def num_frames(num_samples: int) -> int:
    """Kaldi frame count without edge padding (snip_edges)."""
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


# ------------------------------------------------------------------------------------------- w2v-BERT input


def seamless_logmel(wav16k: torch.Tensor | np.ndarray) -> np.ndarray:
    """Log-mel [frames, 80] float32 of a 16 kHz waveform, before normalisation (float64 inside).

    The waveform is scaled to int16 range (x 32768); per 400-sample frame: mean removal, pre-emphasis
    (first sample x 0.03), Povey window, 512-point rfft (kept as complex64), power, Kaldi mel, floor, log.
    Returned as a transposed view of a [80, frames] array, the memory layout the normalisation statistics
    are taken over.
    """
    wave = _as_1d(wav16k, "seamless_logmel")
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    x = np.asarray(wave, dtype=np.float32) * np.float32(INT16_SCALE)
    x = x.astype(np.float64)
    n = num_frames(x.shape[0])
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_SHIFT][:n]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emph = np.empty_like(frames)
    emph[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
    emph[:, 0] = frames[:, 0] * (1 - PREEMPHASIS)
    emph *= povey_window_np(FRAME_LENGTH)
    spec = np.fft.rfft(emph, n=FFT_SIZE, axis=1).astype(np.complex64)
    power = np.abs(spec, dtype=np.float64) ** 2  # [frames, 257]
    mel = np.maximum(SEAMLESS_MEL_FLOOR, np.dot(seamless_mel_filters().T, power.T))  # [80, frames]
    return np.log(mel).astype(np.float32).T


def seamless_features(wav16k: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """w2v-BERT 2.0 input: ``input_features`` [1, ceil(F / 2), 160] float32 and ``attention_mask`` [1, ceil(F / 2)]
    int64, for a 16 kHz waveform [1, n] giving F frames.

    Per mel bin over time (float32): (x - mean) / sqrt(unbiased variance + 1e-7). An odd F gets one padding frame
    of 1.0; rows are frame pairs [2k ; 2k + 1]; the mask is 0 on the row holding the padding frame.
    """
    feats = seamless_logmel(wav16k)
    mean = feats.mean(axis=0, keepdims=True)
    var = feats.var(axis=0, ddof=1, keepdims=True)
    feats = (feats - mean) / np.sqrt(var + np.float32(SEAMLESS_VAR_EPS))
    frames, bins = feats.shape
    pad = (-frames) % SEAMLESS_STRIDE
    if pad:
        feats = np.concatenate([feats, np.full((pad, bins), SEAMLESS_PADDING_VALUE, dtype=feats.dtype)], axis=0)
    rows = feats.shape[0] // SEAMLESS_STRIDE
    stacked = np.ascontiguousarray(feats, dtype=np.float32).reshape(1, rows, bins * SEAMLESS_STRIDE)
    mask = torch.ones(1, rows, dtype=torch.int64)
    if pad:
        mask[0, -1] = 0
    return torch.from_numpy(stacked), mask


# ------------------------------------------------------------------------------------------- CAMPPlus input


def kaldi_fbank(wav16k: torch.Tensor, num_mel_bins: int = 80, sample_rate: int = 16000) -> torch.Tensor:
    """Kaldi log mel filterbank [frames, num_mel_bins] float32 of an unscaled 16 kHz waveform [1, n]: 25 ms / 10 ms
    frames, DC removal, pre-emphasis 0.97, Povey window, 512-point power spectrum, 20 Hz to Nyquist mel bins,
    log(max(., float32 eps)). No dither, no energy term.
    """
    wave = _as_1d(torch.as_tensor(wav16k), "kaldi_fbank").to(torch.float32)
    n = num_frames(wave.shape[0])
    frames = wave.as_strided((n, FRAME_LENGTH), (FRAME_SHIFT * wave.stride(0), wave.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # first sample repeats itself
    frames = frames - PREEMPHASIS * previous
    frames = frames * povey_window_torch(FRAME_LENGTH).to(frames.device)
    frames = torch.nn.functional.pad(frames, (0, FFT_SIZE - FRAME_LENGTH))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [frames, 257]
    banks = kaldi_mel_banks(num_mel_bins, FFT_SIZE, sample_rate).to(power.device)
    banks = torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets no weight
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=FLOAT32_EPS).log()


def campplus_input(wav16k: torch.Tensor) -> torch.Tensor:
    """CAMPPlus input [1, frames, 80]: the Kaldi fbank minus its mean over time."""
    feat = kaldi_fbank(wav16k)
    return (feat - feat.mean(dim=0, keepdim=True)).unsqueeze(0)


# ------------------------------------------------------------------------------------------- s2mel mel


def mel_spectrogram(
    wav22k: torch.Tensor,
    n_fft: int = 1024,
    win: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    sr: int = 22050,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> torch.Tensor:
    """s2mel log-mel [1, n_mels, frames] of [1, n]: reflect pad (n_fft - hop) / 2 each side, STFT without
    centring (periodic Hann), magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel, log(max(., 1e-5)).
    Frames = (n + 2 * pad - n_fft) // hop + 1.
    """
    if wav22k.ndim == 1:
        wav22k = wav22k.unsqueeze(0)
    if wav22k.ndim != 2:
        raise ValueError(f"mel_spectrogram expects [batch, n], got shape {tuple(wav22k.shape)}")
    pad = (n_fft - hop) // 2
    if wav22k.shape[-1] <= pad:
        raise ValueError(f"mel_spectrogram: waveform of {wav22k.shape[-1]} samples is too short to reflect-pad {pad}")
    y = torch.nn.functional.pad(wav22k.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = hann_window(win).to(device=y.device, dtype=y.dtype)
    spec = torch.stft(
        y, n_fft, hop_length=hop, win_length=win, window=window, center=False, onesided=True, return_complex=True
    )
    spec = torch.view_as_real(spec)
    mag = torch.sqrt(spec.pow(2).sum(-1) + MAG_EPS)
    basis = slaney_mel_basis(sr, n_fft, n_mels, float(fmin), None if fmax is None else float(fmax))
    mel = torch.matmul(basis.to(device=mag.device, dtype=mag.dtype), mag)
    return torch.clamp(mel, min=MEL_LOG_FLOOR).log()
