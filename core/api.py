"""The engine's public API types: what the desktop app and the CLI hand to the engine and get back.

The desktop talks to the engine only through :class:`EngineProtocol` and these types.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

SAMPLE_RATE = 22050
EMOTION_NAMES: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")


class EngineError(RuntimeError):
    """A user-facing failure with a clear, one-line message (bad input, missing model, ...)."""


class Cancelled(EngineError):
    """The caller's cancel event was set; the synthesis stopped early."""

    def __init__(self, message: str = "Generation cancelled.") -> None:
        super().__init__(message)


@dataclass
class GenerationSettings:
    """Upstream ``IndexTTS2.infer`` defaults."""

    do_sample: bool = True
    top_p: float = 0.8
    top_k: int = 30
    temperature: float = 0.8
    num_beams: int = 3
    repetition_penalty: float = 10.0
    length_penalty: float = 0.0
    max_mel_tokens: int = 1500
    max_text_tokens_per_segment: int = 120
    interval_silence_ms: int = 200
    diffusion_steps: int = 25
    cfg_rate: float = 0.7
    seed: int | None = None
    fast: bool = False
    """Run the diffusion in reduced precision (bfloat16 on CPU, float16 on CUDA): faster, output differs slightly
    from exact mode. Off (exact float32) by default."""

    def validate(self) -> None:
        checks = [
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (self.temperature > 0.0, "temperature must be > 0"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.repetition_penalty > 0.0, "repetition_penalty must be > 0"),
            (self.max_mel_tokens >= 1, "max_mel_tokens must be >= 1"),
            (self.max_text_tokens_per_segment >= 1, "max_text_tokens_per_segment must be >= 1"),
            (self.interval_silence_ms >= 0, "interval_silence_ms must be >= 0"),
            (self.diffusion_steps >= 1, "diffusion_steps must be >= 1"),
            (self.cfg_rate >= 0.0, "cfg_rate must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise EngineError(f"Invalid setting: {message}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


EmotionMode = Literal["speaker", "audio", "vector", "text"]


@dataclass
class Emotion:
    """How to colour the voice.

    * ``speaker``: the emotion of the voice clip itself (upstream default);
    * ``audio``: an emotion reference clip, blended with strength ``alpha`` (0..1);
    * ``vector``: 8 weights (EMOTION_NAMES order), scaled by ``alpha``; ``random`` picks speaker-matrix rows at random;
    * ``text``: a description (``text``, or the synthesis text when empty) turned into a vector by QwenEmotion.
    """

    mode: EmotionMode = "speaker"
    audio: Path | None = None
    alpha: float = 1.0
    vector: tuple[float, ...] | None = None
    text: str = ""
    random: bool = False

    def validate(self) -> None:
        if self.mode not in ("speaker", "audio", "vector", "text"):
            raise EngineError(f"Unknown emotion mode {self.mode!r}.")
        if not (0.0 <= self.alpha <= 1.0) or math.isnan(self.alpha):
            raise EngineError(f"Emotion strength must be between 0 and 1 (got {self.alpha}).")
        if self.mode == "audio" and not self.audio:
            raise EngineError("Emotion mode 'audio' needs an emotion reference clip.")
        if self.mode == "vector":
            validate_emotion_vector(self.vector)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["audio"] = str(self.audio) if self.audio else None
        d["vector"] = list(self.vector) if self.vector is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Emotion:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("audio"):
            known["audio"] = Path(known["audio"])
        if known.get("vector") is not None:
            known["vector"] = tuple(float(x) for x in known["vector"])
        return cls(**known)


def validate_emotion_vector(vector: tuple[float, ...] | list[float] | None) -> list[float]:
    """Clear errors for a wrong length, negative, NaN/inf or all-zero emotion vector."""
    if vector is None:
        raise EngineError("Emotion mode 'vector' needs 8 values (" + ", ".join(EMOTION_NAMES) + ").")
    values = [float(v) for v in vector]
    if len(values) != len(EMOTION_NAMES):
        raise EngineError(f"The emotion vector needs exactly {len(EMOTION_NAMES)} values ({', '.join(EMOTION_NAMES)}); got {len(values)}.")
    for name, v in zip(EMOTION_NAMES, values):
        if math.isnan(v) or math.isinf(v):
            raise EngineError(f"Emotion '{name}' is not a number ({v}).")
        if v < 0:
            raise EngineError(f"Emotion '{name}' is negative ({v}); use values from 0 to 1.")
    if sum(values) <= 0:
        raise EngineError("The emotion vector is all zeros; raise at least one emotion or choose 'same as voice'.")
    return values


@dataclass
class Progress:
    """One progress report: ``stage`` in words, ``fraction`` of the whole job in [0, 1]."""

    stage: str
    fraction: float
    segment: int = 0
    segments: int = 0
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class SynthesisResult:
    audio: np.ndarray  # int16 [N], 22050 Hz mono
    sample_rate: int = SAMPLE_RATE
    timings: dict[str, float] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class SegmentAudio:
    """One streamed segment: its int16 audio (silence interval not included)."""

    index: int
    count: int
    audio: np.ndarray
    text: str


class EngineProtocol(Protocol):
    def load(self, model_dir: str | Path, device: str = "auto", fp16: bool = False, on_progress: ProgressCallback | None = None) -> None: ...

    @property
    def loaded(self) -> bool: ...

    def split_text(self, text: str, max_tokens: int = 120) -> list[str]: ...

    def synthesize(
        self,
        text: str,
        voice: str | Path,
        emotion: Emotion | None = None,
        settings: GenerationSettings | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> SynthesisResult: ...

    def synthesize_stream(
        self,
        text: str,
        voice: str | Path,
        emotion: Emotion | None = None,
        settings: GenerationSettings | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[SegmentAudio]: ...
