"""Command-line pieces shared by ``core.cli`` and the sub-commands it registers (``project``, ...): the progress
bar, the generation options and their error words, the voice cache folder. No sub-command imports ``core.cli``
itself, so the command modules form no import cycle."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .api import GenerationSettings, Progress, SettingError


class _Bar:
    """A one-line progress bar on a terminal; plain lines otherwise."""

    def __init__(self, stream=None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.last = ""
        self.t0 = time.monotonic()

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        seg = f" [{p.segment}/{p.segments}]" if p.segments else ""
        line = f"{p.stage}{seg}"
        if self.tty:
            width = 30
            done = int(width * max(0.0, min(p.fraction, 1.0)))
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {p.fraction * 100:5.1f}% "
                              f"{time.monotonic() - self.t0:6.1f}s {line:<40.40}")
            self.stream.flush()
        elif line != self.last:
            self.stream.write(f"{line} ({p.fraction * 100:.0f}%)\n")
        self.last = line

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")


def voice_cache_dir(given: str | None) -> Path:
    """``--cache-dir``, or the user cache folder's ``voices``."""
    if given:
        return Path(given)
    from platformdirs import user_cache_dir

    from .models import APP_NAME

    return Path(user_cache_dir(APP_NAME, appauthor=False)) / "voices"


def _add_generation(p: argparse.ArgumentParser) -> None:
    d = GenerationSettings()
    g = p.add_argument_group("generation")
    g.add_argument("--greedy", action="store_true", help="deterministic decoding (no sampling, 1 beam)")
    g.add_argument("--top-p", type=float, default=d.top_p)
    g.add_argument("--top-k", type=int, default=d.top_k)
    g.add_argument("--temperature", type=float, default=d.temperature)
    g.add_argument("--num-beams", type=int, default=d.num_beams)
    g.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    g.add_argument("--max-mel-tokens", type=int, default=d.max_mel_tokens)
    g.add_argument("--max-text-tokens", type=int, default=None,
                   help=f"text tokens per segment (default {d.max_text_tokens_per_segment}; IndexTTS-2.5: by language, "
                        "en/es 60, ar 80, ja 100, zh 120)")
    g.add_argument("--silence-ms", type=int, default=d.interval_silence_ms)
    g.add_argument("--diffusion-steps", type=int, default=d.diffusion_steps)
    g.add_argument("--cfg-rate", type=float, default=d.cfg_rate)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--lang", default=None, help="IndexTTS-2.5: zh, en, ja, es or ar (default: from the text's "
                   "script; IndexTTS-2.0 ignores it)")
    g.add_argument("--duration", type=float, default=d.duration_factor,
                   help="IndexTTS-2.5: speech length factor 0.5-2.0 (default 1.0)")
    g.add_argument("--fast", action="store_true",
                   help="diffusion in reduced precision (bfloat16 on CPU, float16 on CUDA): faster, the sound differs "
                        "slightly from the exact default")


# GenerationSettings field -> the option that sets it (errors name the option the user typed)
FLAGS = {
    "top_p": "--top-p", "top_k": "--top-k", "temperature": "--temperature", "num_beams": "--num-beams",
    "repetition_penalty": "--repetition-penalty", "max_mel_tokens": "--max-mel-tokens",
    "max_text_tokens_per_segment": "--max-text-tokens", "interval_silence_ms": "--silence-ms",
    "diffusion_steps": "--diffusion-steps", "cfg_rate": "--cfg-rate", "seed": "--seed", "lang": "--lang",
    "duration_factor": "--duration",
}


def setting_message(exc: SettingError, where: str = "") -> str:
    """A SettingError in command-line words: the option, the value, the allowed range."""
    flag = FLAGS.get(exc.setting, exc.setting)
    return f"{where}{flag} {exc.value} is out of range: allowed {exc.allowed}."


def _settings(a: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        do_sample=not a.greedy, top_p=a.top_p, top_k=a.top_k, temperature=a.temperature,
        num_beams=1 if a.greedy else a.num_beams, repetition_penalty=a.repetition_penalty,
        max_mel_tokens=a.max_mel_tokens, max_text_tokens_per_segment=(
            GenerationSettings.max_text_tokens_per_segment if a.max_text_tokens is None else a.max_text_tokens),
        interval_silence_ms=a.silence_ms, diffusion_steps=a.diffusion_steps, cfg_rate=a.cfg_rate, seed=a.seed,
        fast=a.fast, stream=bool(getattr(a, "stream", False)),  # only synth has --stream
        lang=a.lang, duration_factor=a.duration,
    )
