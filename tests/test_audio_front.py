"""Parity of the reference-audio front end with the ``audio_front`` goldens (every case the golden lists).

Each stage is checked on the golden input of that stage at the README's tolerance, then end to end from the WAV.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from reference import ref
from safetensors.numpy import load_file

from core import audio as audio_mod
from core.audio import (
    decode_audio,
    load_audio,
    load_emotion_audio,
    load_speaker_audio,
    resample_22k_to_16k,
    resample_soxr,
    sinc_resample_kernel,
    to_mono,
)
from core.features import (
    campplus_input,
    hann_window,
    kaldi_fbank,
    kaldi_mel_banks,
    mel_spectrogram,
    povey_window_np,
    povey_window_torch,
    seamless_features,
    seamless_logmel,
    seamless_mel_filters,
    slaney_mel_basis,
)

META = json.loads(ref("audio_front", "audio_front.json").read_text())
CASES = sorted(META["cases"])
SPK_CASES = [c for c in CASES if META["cases"][c]["pipeline"] == "spk"]
MEL_ARGS = META["mel_fn_args"]
KALDI_FLOOR = float(np.log(np.float32(np.finfo(np.float32).eps)))  # -15.942385


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return load_file(str(ref("audio_front", "audio_front.safetensors")))


def clip_path(case: str):
    return ref("data", "examples", META["cases"][case]["file"])


def wave_16k(golden: dict[str, np.ndarray], case: str) -> torch.Tensor:
    """The golden 16 kHz input of the feature extractors: audio_16k (spk) or the 16 kHz load (emo)."""
    key = f"{case}.audio_16k" if META["cases"][case]["pipeline"] == "spk" else f"{case}.loaded"
    return torch.from_numpy(golden[key])


def mel(wave: torch.Tensor) -> torch.Tensor:
    return mel_spectrogram(
        wave,
        n_fft=MEL_ARGS["n_fft"],
        win=MEL_ARGS["win_size"],
        hop=MEL_ARGS["hop_size"],
        n_mels=MEL_ARGS["num_mels"],
        sr=MEL_ARGS["sampling_rate"],
        fmin=MEL_ARGS["fmin"],
        fmax=MEL_ARGS["fmax"],
    )


def diff(ours, theirs) -> np.ndarray:
    ours = ours.numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    assert ours.shape == theirs.shape, f"shape {ours.shape} != golden {theirs.shape}"
    return np.abs(ours.astype(np.float64) - theirs.astype(np.float64))


def sha256_f32(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def test_golden_lists_every_family(golden):
    assert CASES, "the golden lists no cases"
    assert SPK_CASES, "the golden lists no speaker case"
    for case in CASES:
        families = ["decoded_head", "loaded", "seamless_logmel", "input_features", "attention_mask"]
        if META["cases"][case]["pipeline"] == "spk":
            families += ["audio_16k", "fbank", "fbank_mean", "ref_mel"]
        for family in families:
            assert f"{case}.{family}" in golden, f"{case}.{family} missing from the golden"


# ------------------------------------------------------------------------------------------ decode + mono


@pytest.mark.parametrize("case", CASES)
def test_decode(case, golden):
    info = META["cases"][case]
    decoded = decode_audio(clip_path(case))
    assert decoded.sample_rate == info["native_sr"]
    assert decoded.samples.shape == (info["channels"], info["native_frames"])
    assert decoded.samples.dtype == np.float32
    head = golden[f"{case}.decoded_head"]
    assert diff(decoded.samples[:, : head.shape[1]], head).max() <= 1e-6
    assert sha256_f32(decoded.samples) == info["decode_sha256_f32le"]
    np.testing.assert_allclose(decoded.samples.astype(np.float64).sum(axis=1), info["decode_sum_per_channel"],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_native_mono(case, golden):
    info = META["cases"][case]
    mono = to_mono(decode_audio(clip_path(case)).samples)
    assert mono.dtype == np.float32 and mono.shape == (info["native_mono_len"],)
    assert sha256_f32(mono) == info["native_mono_sha256_f32le"]
    key = f"{case}.native_mono"
    if key in golden:  # stored for some clips only; the checksum above covers every clip
        assert diff(mono[None], golden[key]).max() <= 1e-6


# ------------------------------------------------------------------------------------------ resampling


@pytest.mark.parametrize("case", CASES)
def test_soxr_resample_from_native_mono(case, golden):
    info = META["cases"][case]
    key = f"{case}.native_mono"
    mono = golden[key][0] if key in golden else to_mono(decode_audio(clip_path(case)).samples)
    out = resample_soxr(mono, info["native_sr"], info["load_sr"])
    assert out.shape[-1] == info["librosa_fix_length"]
    pad = info["fix_length_zero_padded"]
    if pad:
        assert np.all(out[-pad:] == 0.0)
    out = out[: info["cap_samples"]]
    assert diff(out[None], golden[f"{case}.loaded"]).max() <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_load_audio(case, golden):
    info = META["cases"][case]
    # min_seconds=0: this checks the numerics; the length policy per pipeline is tested in test_audio_errors.py
    loaded = load_audio(clip_path(case), info["load_sr"], min_seconds=0.0)
    assert loaded.dtype == torch.float32
    assert loaded.shape == (1, info["loaded_len"])
    assert diff(loaded, golden[f"{case}.loaded"]).max() <= 1e-5


@pytest.mark.parametrize("case", SPK_CASES)
def test_resample_22k_to_16k(case, golden):
    info = META["cases"][case]
    out = resample_22k_to_16k(torch.from_numpy(golden[f"{case}.loaded"]))
    assert out.dtype == torch.float32 and out.shape == (1, info["len_16k"])
    assert diff(out, golden[f"{case}.audio_16k"]).max() <= 5e-5


@pytest.mark.parametrize("case", CASES)
def test_load_by_pipeline(case, golden):
    """The engine's entry points: speaker clips give both rates, emotion clips the direct 16 kHz load."""
    info = META["cases"][case]
    if info["pipeline"] == "spk":
        spk = load_speaker_audio(clip_path(case))
        assert diff(spk.audio_22k, golden[f"{case}.loaded"]).max() <= 1e-5
        assert diff(spk.audio_16k, golden[f"{case}.audio_16k"]).max() <= 5e-5
    else:
        emo = load_emotion_audio(clip_path(case))
        assert diff(emo, golden[f"{case}.loaded"]).max() <= 1e-5


def test_cap_applies_after_resampling(tmp_path, golden):
    """A clip longer than 15 s: decoding only a margin past the cap gives exactly the full-file result."""
    case = SPK_CASES[-1]
    info = META["cases"][case]
    mono = to_mono(decode_audio(clip_path(case)).samples)
    reps = math.ceil(21.0 * info["native_sr"] / mono.shape[0])
    long = np.tile(mono, reps)
    path = tmp_path / "long.wav"
    sf.write(str(path), long, info["native_sr"], subtype="FLOAT")
    for sr in (audio_mod.SPEAKER_SR, audio_mod.EMOTION_SR):
        cap = int(15.0 * sr)
        expected = resample_soxr(long, info["native_sr"], sr)[:cap]
        got = load_audio(path, sr)
        assert got.shape == (1, cap)
        assert diff(got, expected[None]).max() == 0.0


# ------------------------------------------------------------------------------------------ w2v-BERT input


@pytest.mark.parametrize("case", CASES)
def test_seamless_features(case, golden):
    info = META["cases"][case]
    wave = wave_16k(golden, case)
    logmel = seamless_logmel(wave)
    assert logmel.shape == (info["seamless_frames"], 80)
    assert diff(logmel, golden[f"{case}.seamless_logmel"]).max() <= 2e-3
    features, mask = seamless_features(wave)
    assert features.dtype == torch.float32 and mask.dtype == torch.int64
    assert features.shape == (1, info["input_features_len"], 160)
    assert diff(features, golden[f"{case}.input_features"]).max() <= 2e-3
    assert torch.equal(mask, torch.from_numpy(golden[f"{case}.attention_mask"]))
    assert int(mask.sum()) == info["attention_mask_sum"]


# ------------------------------------------------------------------------------------------ CAMPPlus input


@pytest.mark.parametrize("case", SPK_CASES)
def test_kaldi_fbank(case, golden):
    info = META["cases"][case]
    fbank = kaldi_fbank(wave_16k(golden, case))
    assert fbank.dtype == torch.float32 and fbank.shape == (info["fbank_frames"], 80)
    theirs = golden[f"{case}.fbank"]
    err = diff(fbank, theirs)
    assert err.max() <= 5e-3 and err.mean() <= 1e-5
    on_floor = np.isclose(theirs, KALDI_FLOOR, rtol=0, atol=1e-6)
    assert int(on_floor.sum()) == info["fbank_floor_hits"]
    assert np.all(np.isclose(fbank.numpy()[on_floor], KALDI_FLOOR, rtol=0, atol=1e-6))


@pytest.mark.parametrize("case", SPK_CASES)
def test_fbank_mean_and_campplus_input(case, golden):
    wave = wave_16k(golden, case)
    fbank = kaldi_fbank(wave)
    assert diff(fbank.mean(dim=0, keepdim=True), golden[f"{case}.fbank_mean"]).max() <= 1e-3
    centred = campplus_input(wave)
    theirs = golden[f"{case}.fbank"] - golden[f"{case}.fbank_mean"]
    err = diff(centred, theirs[None])
    assert err.max() <= 5e-3 and err.mean() <= 1e-5
    assert torch.equal(centred[0], fbank - fbank.mean(dim=0, keepdim=True))


# ------------------------------------------------------------------------------------------ s2mel prompt mel


@pytest.mark.parametrize("case", SPK_CASES)
def test_ref_mel(case, golden):
    info = META["cases"][case]
    out = mel(torch.from_numpy(golden[f"{case}.loaded"]))
    assert out.dtype == torch.float32 and out.shape == (1, MEL_ARGS["num_mels"], info["ref_mel_frames"])
    err = diff(out, golden[f"{case}.ref_mel"])
    assert err.max() <= 5e-3 and err.mean() <= 1e-5


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("case", CASES)
def test_end_to_end_from_file(case, golden):
    """From the WAV through the public API; compared by mean-abs and p99.9 as the README recommends."""
    info = META["cases"][case]
    if info["pipeline"] == "spk":
        spk = load_speaker_audio(clip_path(case))
        wave16 = spk.audio_16k
        fb = diff(campplus_input(wave16), (golden[f"{case}.fbank"] - golden[f"{case}.fbank_mean"])[None])
        assert fb.mean() <= 1e-4 and np.quantile(fb, 0.999) <= 5e-3
        rm = diff(mel(spk.audio_22k), golden[f"{case}.ref_mel"])
        assert rm.mean() <= 1e-3 and np.quantile(rm, 0.999) <= 5e-3
    else:
        wave16 = load_emotion_audio(clip_path(case))
    features, mask = seamless_features(wave16)
    feat = diff(features, golden[f"{case}.input_features"])
    assert feat.mean() <= 1e-4 and np.quantile(feat, 0.999) <= 2e-3
    assert torch.equal(mask, torch.from_numpy(golden[f"{case}.attention_mask"]))


# ------------------------------------------------------------------------------------------ constant tables


def test_resample_kernel_rows(golden):
    spec = META["resample_22050_16000"]
    kernel, width = sinc_resample_kernel(22050, 16000)
    assert list(kernel.shape) == spec["kernel_shape"] and width == spec["width"]
    rows = kernel[spec["stored_rows"], 0].numpy()
    assert diff(rows, golden["const.resample_22050_16000_kernel_rows"]).max() <= 1e-7


def test_filterbanks_and_windows(golden):
    # float32 log/divide may round differently across CPUs' SIMD paths: a few 1e-6 on the Kaldi banks
    assert diff(kaldi_mel_banks(80, 512, 16000, 20.0, 0.0), golden["const.kaldi_mel_banks_80x256"]).max() <= 5e-5
    assert diff(povey_window_torch(400), golden["const.kaldi_povey_window_400"]).max() <= 1e-7
    assert diff(seamless_mel_filters(), golden["const.seamless_mel_filters_257x80"]).max() <= 1e-6
    assert diff(povey_window_np(400), golden["const.seamless_povey_window_400"]).max() <= 1e-6
    basis = slaney_mel_basis(MEL_ARGS["sampling_rate"], MEL_ARGS["n_fft"], MEL_ARGS["num_mels"],
                             float(MEL_ARGS["fmin"]), MEL_ARGS["fmax"])
    assert diff(basis, golden["const.s2mel_mel_basis_80x513"]).max() <= 1e-6
    assert diff(hann_window(MEL_ARGS["win_size"]), golden["const.s2mel_hann_window_1024"]).max() <= 1e-7


def test_tables_are_cached():
    assert slaney_mel_basis(22050, 1024, 80, 0.0, None) is slaney_mel_basis(22050, 1024, 80, 0.0, None)
    assert kaldi_mel_banks(80, 512, 16000, 20.0, 0.0) is kaldi_mel_banks(80, 512, 16000, 20.0, 0.0)
    assert seamless_mel_filters() is seamless_mel_filters()
    assert sinc_resample_kernel(22050, 16000) is sinc_resample_kernel(22050, 16000)
