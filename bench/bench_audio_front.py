"""Time the non-neural reference-audio front end on CPU: decode + resample, features.

    python bench/bench_audio_front.py [--file CLIP] [--seconds 10] [--repeat 5]

Without --file a 10 s stereo 44.1 kHz PCM16 WAV of synthetic voice-like audio is written to a temp folder.
Prints the median seconds per stage and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio import load_emotion_audio, load_speaker_audio  # noqa: E402
from core.features import campplus_input, mel_spectrogram, seamless_features  # noqa: E402


def synth_clip(path: Path, seconds: float, sr: int = 44100) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) ** 2
    voice = 0.2 * voice / np.abs(voice).max() + 0.002 * rng.standard_normal(t.shape)
    stereo = np.stack([voice, 0.9 * voice], axis=1)
    sf.write(str(path), stereo, sr, subtype="PCM_16")


def timed(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clip = args.file
        if clip is None:
            clip = Path(tmp) / "clip.wav"
            synth_clip(clip, args.seconds)
        info = sf.info(str(clip))
        print(f"clip: {clip.name}, {info.frames / info.samplerate:.2f} s, {info.samplerate} Hz, {info.channels} ch")
        rows = []
        t, spk = timed(lambda: load_speaker_audio(clip), args.repeat)
        rows.append(("load speaker (decode, soxr 22.05k, sinc 16k)", t))
        t, emo = timed(lambda: load_emotion_audio(clip), args.repeat)
        rows.append(("load emotion (decode, soxr 16k)", t))
        t, _ = timed(lambda: seamless_features(spk.audio_16k), args.repeat)
        rows.append(("w2v-BERT features (speaker)", t))
        t, _ = timed(lambda: seamless_features(emo), args.repeat)
        rows.append(("w2v-BERT features (emotion)", t))
        t, _ = timed(lambda: campplus_input(spk.audio_16k), args.repeat)
        rows.append(("CAMPPlus fbank", t))
        t, _ = timed(lambda: mel_spectrogram(spk.audio_22k), args.repeat)
        rows.append(("s2mel prompt mel", t))
    for name, seconds in rows:
        print(f"{name:48s} {seconds * 1000:8.1f} ms")
    print(f"{'total':48s} {sum(s for _, s in rows) * 1000:8.1f} ms")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
