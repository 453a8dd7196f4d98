"""Reference clips a user may pick: every common format loads; unusable files raise a clear AudioError."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.audio import (
    EMOTION_SR,
    SPEAKER_SR,
    AudioError,
    load_audio,
    load_emotion_audio,
    load_speaker_audio,
    resample_soxr,
)

NATIVE_SR = 44100
SECONDS = 1.5


def voice_like(seconds: float = SECONDS, sr: int = NATIVE_SR) -> np.ndarray:
    """[n, 2] float32: two different harmonic-ish channels under a raised-cosine envelope."""
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 * (1 - np.cos(2 * np.pi * t / seconds))
    left = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t + 1)
            + 0.1 * np.sin(2 * np.pi * 1750 * t)) * env
    right = (0.25 * np.sin(2 * np.pi * 330 * t) + 0.15 * np.sin(2 * np.pi * 990 * t)) * env
    return np.stack([left, right], axis=1).astype(np.float32)


# format, subtype, extension, max abs error, mean abs error (quantisation / lossy coding of a ~0.5 peak signal)
FORMATS = [
    ("WAV", "PCM_16", "wav", 1e-4, 3e-5),
    ("WAV", "PCM_24", "wav", 1e-6, 1e-7),
    ("WAV", "PCM_32", "wav", 1e-6, 1e-7),
    ("WAV", "FLOAT", "wav", 0.0, 0.0),
    ("FLAC", "PCM_16", "flac", 1e-4, 3e-5),
    ("FLAC", "PCM_24", "flac", 1e-6, 1e-7),
    ("OGG", "VORBIS", "ogg", 3e-2, 3e-3),
    ("MP3", "MPEG_LAYER_III", "mp3", 5e-2, 5e-3),
]


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize(("fmt", "subtype", "ext", "max_err", "mean_err"), FORMATS,
                         ids=[f"{f}-{s}" for f, s, *_ in FORMATS])
def test_formats_load(tmp_path, fmt, subtype, ext, max_err, mean_err, channels):
    if subtype not in sf.available_subtypes(fmt):
        pytest.fail(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}; need libsndfile >= 1.1")
    signal = voice_like()
    if channels == 1:
        signal = signal[:, :1]
    path = tmp_path / f"clip_{channels}ch.{ext}"
    sf.write(str(path), signal, NATIVE_SR, format=fmt, subtype=subtype)
    mono = signal.mean(axis=1, dtype=np.float32)
    n = signal.shape[0]
    for sr in (SPEAKER_SR, EMOTION_SR):
        got = load_audio(path, sr)
        assert got.dtype == torch.float32
        assert got.shape == (1, math.ceil(n * sr / NATIVE_SR))
        expected = resample_soxr(mono, NATIVE_SR, sr)
        err = np.abs(got.numpy()[0] - expected)
        assert err.max() <= max_err and err.mean() <= mean_err, (err.max(), err.mean())


def test_speaker_and_emotion_entry_points(tmp_path):
    path = tmp_path / "voice.flac"
    sf.write(str(path), voice_like(), NATIVE_SR, subtype="PCM_24")
    spk = load_speaker_audio(path)
    n = int(SECONDS * NATIVE_SR)
    assert spk.audio_22k.shape == (1, math.ceil(n * SPEAKER_SR / NATIVE_SR))
    assert spk.audio_16k.shape == (1, math.ceil(spk.audio_22k.shape[1] * 320 / 441))
    emo = load_emotion_audio(path)
    assert emo.shape == (1, math.ceil(n * EMOTION_SR / NATIVE_SR))
    # two different 16 kHz signals (native -> 22.05 -> 16 kHz vs native -> 16 kHz), both close to each other
    assert not torch.equal(emo, spk.audio_16k)
    assert (emo - spk.audio_16k).abs().mean() < 1e-3


def test_native_rate_equal_to_target_is_not_resampled(tmp_path):
    signal = voice_like(sr=SPEAKER_SR)[:, 0]
    path = tmp_path / "native22k.wav"
    sf.write(str(path), signal, SPEAKER_SR, subtype="FLOAT")
    assert torch.equal(load_audio(path, SPEAKER_SR)[0], torch.from_numpy(signal))


# ------------------------------------------------------------------------------------------ bad files


def assert_audio_error(path: Path, *words: str, loader=load_speaker_audio) -> None:
    with pytest.raises(AudioError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message.lower(), message


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


def test_missing_file(tmp_path):
    assert_audio_error(tmp_path / "nowhere.wav", "not found")


def test_directory(tmp_path):
    assert_audio_error(tmp_path, "not a file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_audio_error(path, "empty")
    assert_audio_error(path, "empty", loader=load_emotion_audio)


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("This is not a recording, just some text that was renamed to .wav\n" * 20)
    assert_audio_error(path, "cannot read", "not audio")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_audio_error(path, "cannot read")


def test_truncated_wav_header(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(str(good), voice_like()[:, 0], NATIVE_SR, subtype="PCM_16")
    path = tmp_path / "truncated.wav"
    path.write_bytes(good.read_bytes()[:30])
    assert_audio_error(path, "cannot read", "corrupt")


def test_header_without_samples(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(str(path), np.zeros((0, 1), dtype=np.float32), NATIVE_SR, subtype="PCM_16")
    assert path.stat().st_size > 0
    with pytest.raises(AudioError) as info:
        load_speaker_audio(path)
    assert str(path) in str(info.value)


def test_all_zeros_is_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(str(path), np.zeros(2 * NATIVE_SR, dtype=np.float32), NATIVE_SR, subtype="PCM_16")
    assert_audio_error(path, "silent")
    assert_audio_error(path, "silent", loader=load_emotion_audio)


def test_near_silence_is_silent(tmp_path):
    path = tmp_path / "hiss.wav"
    hiss = np.random.default_rng(1).normal(0.0, 1e-5, 2 * NATIVE_SR).astype(np.float32)
    sf.write(str(path), hiss, NATIVE_SR, subtype="FLOAT")
    assert_audio_error(path, "silent")


def test_nan_samples_are_corrupt(tmp_path):
    path = tmp_path / "nan.wav"
    signal = voice_like()[:, 0].copy()
    signal[100] = np.nan
    sf.write(str(path), signal, NATIVE_SR, subtype="FLOAT")
    assert_audio_error(path, "corrupt")


def test_too_short(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(str(path), voice_like(0.3)[:, 0], NATIVE_SR, subtype="PCM_16")
    assert_audio_error(path, "too short")
    sf.write(str(path), voice_like(0.45)[:, 0], NATIVE_SR, subtype="PCM_16")
    assert_audio_error(path, "too short")


def test_emotion_clip_minimum(tmp_path):
    """Emotion clips may be shorter (upstream ships a 0.47 s one), but not shorter than 0.25 s."""
    ok = tmp_path / "emo_short.wav"
    sf.write(str(ok), voice_like(0.45)[:, 0], NATIVE_SR, subtype="PCM_16")
    assert load_emotion_audio(ok).shape == (1, math.ceil(int(0.45 * NATIVE_SR) * EMOTION_SR / NATIVE_SR))
    tiny = tmp_path / "emo_tiny.wav"
    sf.write(str(tiny), voice_like(0.2)[:, 0], NATIVE_SR, subtype="PCM_16")
    assert_audio_error(tiny, "too short", loader=load_emotion_audio)
