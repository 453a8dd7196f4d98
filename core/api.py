"""The engine's public API: one request type in, one result out, for every front end (GUI, CLI, batch, API).

Everything here is torch-free, so a front end can check a request before anything heavy is imported:
``SynthesisRequest(...).validate()`` checks the text, the clips and every setting against fixed ranges;
the engine checks it again with its loaded model's :class:`ModelLimits` (maximum speech tokens, text tokens
per segment). A violation is a :class:`SettingError` naming the setting, the value and the allowed range.
The desktop and the CLI talk to the engine only through :class:`EngineProtocol` and these types.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

SAMPLE_RATE = 22050
EMOTION_NAMES: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")


class EngineError(RuntimeError):
    """A user-facing failure with a clear, one-line message (bad input, missing model, ...)."""


class Cancelled(EngineError):
    """The caller's cancel event was set; the synthesis stopped early."""

    def __init__(self, message: str = "Generation cancelled.") -> None:
        super().__init__(message)


class SettingError(EngineError):
    """A generation setting outside its allowed range; ``setting`` is the field name of GenerationSettings."""

    def __init__(self, setting: str, value: object, allowed: str) -> None:
        self.setting, self.value, self.allowed = setting, value, allowed
        super().__init__(f"Invalid setting {setting} = {value}: allowed {allowed}.")


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class ModelLimits:
    """What the loaded model can take (from its config): the engine adds these to the fixed ranges."""

    max_mel_tokens: int  # speech tokens the GPT can produce per segment
    max_text_tokens: int  # text tokens the GPT can read per segment
    version: str = "2.0"  # which IndexTTS the folder holds ("2.0" or "2.5", told by its files)
    languages: tuple[str, ...] = ()  # the language codes ``GenerationSettings.lang`` may take (2.5 only)
    duration_control: bool = False  # ``GenerationSettings.duration_factor`` other than 1.0 is possible (2.5 only)
    streaming: bool = True  # ``GenerationSettings.stream`` renders in chunks (2.0); 2.5 renders whole segments

    @property
    def label(self) -> str:
        return f"IndexTTS-{self.version}"

    def as_v25(self) -> ModelLimits:
        """These limits for an IndexTTS-2.5 model: five languages, duration control, no chunked streaming."""
        from .text.v25 import SUPPORTED_LANGUAGES

        return replace(self, version="2.5", languages=SUPPORTED_LANGUAGES, duration_control=True, streaming=False)


@dataclass(frozen=True)
class _Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    integer: bool = False

    def ok(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value <= self.high

    def words(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            if self.low_open:
                return f"{kind} greater than {_fmt(self.low)} and at most {_fmt(self.high)}"
            return f"{kind} from {_fmt(self.low)} to {_fmt(self.high)}"
        if self.low is not None:
            return f"{kind} greater than {_fmt(self.low)}" if self.low_open else f"{kind} of at least {_fmt(self.low)}"
        return kind


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Fixed ranges, valid whatever model is loaded. max_mel_tokens and max_text_tokens_per_segment get the loaded
# model's own upper limit on top (ModelLimits).
SETTING_RANGES: dict[str, _Range] = {
    "top_p": _Range(0.0, 1.0, low_open=True),
    "top_k": _Range(0, 100_000, integer=True),
    "temperature": _Range(0.0, 100.0, low_open=True),
    "num_beams": _Range(1, 16, integer=True),
    "repetition_penalty": _Range(0.0, 100.0, low_open=True),
    "length_penalty": _Range(-100.0, 100.0),
    "max_mel_tokens": _Range(1, 100_000, integer=True),
    "max_text_tokens_per_segment": _Range(1, 100_000, integer=True),
    "interval_silence_ms": _Range(0, 60_000, integer=True),
    "diffusion_steps": _Range(1, 1000, integer=True),
    "cfg_rate": _Range(0.0, 100.0),
    "seed": _Range(0, 2**63 - 1, integer=True),
    "duration_factor": _Range(0.5, 2.0),
}


@dataclass(frozen=True)
class GenerationSettings:
    """Upstream ``IndexTTS2.infer`` defaults (frozen: derive a changed copy with ``dataclasses.replace``)."""

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
    stream: bool = False
    """Render each segment in chunks while its speech codes are decoded (``core.streaming``): the first audio comes
    after the first chunk instead of the whole segment. Decodes with one beam (``num_beams`` is then ignored, with a
    warning: the best of several beams is known only at the end); the chunks are joined with a crossfade, so the
    sound differs slightly from the non-streamed render of the same codes. Off (upstream's render) by default."""
    lang: str | None = None
    """IndexTTS-2.5's language (zh, en, ja, es, ar); None: guessed from the text's script
    (:func:`core.text.v25.guess_language`). IndexTTS-2.0 reads Chinese and English by itself and ignores it, so one
    request (a project line, an A/B pair) can be rendered with either model."""
    duration_factor: float = 1.0
    """IndexTTS-2.5 only: the speech length relative to the model's own (0.5 = twice as fast, 2.0 = half as fast).
    IndexTTS-2.0 has no duration control: with a 2.0 model anything but 1.0 is a SettingError."""

    def validate(self, limits: ModelLimits | None = None) -> GenerationSettings:
        """Raise :class:`SettingError` for the first setting outside its range; return self when all are fine."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("do_sample", "fast", "stream"):
                if not isinstance(value, bool):
                    raise SettingError(f.name, value, "true or false")
                continue
            if f.name == "seed" and value is None:
                continue
            if f.name == "lang":
                _check_lang(value)
                continue
            if f.name == "duration_factor" and limits is not None and not limits.duration_control \
                    and SETTING_RANGES[f.name].ok(value) and value != 1.0:
                raise SettingError(f.name, value, f"1.0 with {limits.label} (duration control needs IndexTTS-2.5)")
            rng = SETTING_RANGES[f.name]
            model_high = None
            if limits is not None and f.name == "max_mel_tokens":
                model_high = limits.max_mel_tokens
            elif limits is not None and f.name == "max_text_tokens_per_segment":
                model_high = limits.max_text_tokens
            if model_high is not None:
                rng = replace(rng, high=min(rng.high or model_high, model_high))
            if not rng.ok(value):
                suffix = " (the loaded model's limit)" if model_high is not None and rng.high == model_high else ""
                raise SettingError(f.name, value, rng.words() + suffix)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _check_lang(value: object) -> None:
    """None, or a language IndexTTS-2.5 speaks (a loaded 2.0 model then ignores it)."""
    if value is None:
        return
    from .text import TextError
    from .text.v25 import SUPPORTED_LANGUAGES, check_language

    try:
        if not isinstance(value, str) or check_language(value) != value:
            raise TextError("not a lower-case language code")
    except TextError:
        raise SettingError("lang", repr(value), "one of " + ", ".join(SUPPORTED_LANGUAGES) + " or none (from the "
                           "text's script)") from None


# ------------------------------------------------------------------------------------------ emotion

EmotionMode = Literal["speaker", "audio", "vector", "text"]
EMOTION_MODES: tuple[str, ...] = ("speaker", "audio", "vector", "text")

# The upstream WebUI's slider rule: a factor per emotion (de-emphasising those that tend to sound odd; order
# EMOTION_NAMES), then the sum capped at 0.8. ``IndexTTS2.infer`` itself does not apply it.
EMO_BIAS: tuple[float, ...] = (0.9375, 0.875, 1.0, 1.0, 0.9375, 0.9375, 0.6875, 0.5625)
EMO_SUM_CAP = 0.8


def normalize_emo_vec(vector: Sequence[float], apply_bias: bool = True) -> list[float]:
    """The WebUI's slider normalisation: multiply by :data:`EMO_BIAS`, then cap the sum at :data:`EMO_SUM_CAP`."""
    values = [float(v) for v in vector]
    if apply_bias:
        values = [v * b for v, b in zip(values, EMO_BIAS, strict=True)]
    total = sum(values)
    if total > EMO_SUM_CAP:
        scale = EMO_SUM_CAP / total
        values = [v * scale for v in values]
    return values


def scale_emo_weights(vector: Sequence[float], alpha: float) -> list[float]:
    """infer_v2's emo_alpha step for vectors: clamp alpha to [0, 1]; if not 1, truncate w*alpha to 4 decimals."""
    scale = max(0.0, min(1.0, float(alpha)))
    values = [float(v) for v in vector]
    if scale != 1.0:
        values = [int(v * scale * 10000) / 10000 for v in values]
    return values


def validate_emotion_vector(vector: Sequence[float] | None) -> list[float]:
    """Clear errors for a wrong length, negative, NaN/inf or all-zero emotion vector."""
    if vector is None:
        raise EngineError("Emotion mode 'vector' needs 8 values (" + ", ".join(EMOTION_NAMES) + ").")
    try:
        values = [float(v) for v in vector]
    except (TypeError, ValueError):
        raise EngineError(f"The emotion vector needs {len(EMOTION_NAMES)} numbers; got {vector!r}.") from None
    if len(values) != len(EMOTION_NAMES):
        raise EngineError(f"The emotion vector needs exactly {len(EMOTION_NAMES)} values ({', '.join(EMOTION_NAMES)}); "
                          f"got {len(values)}.")
    for name, v in zip(EMOTION_NAMES, values):
        if math.isnan(v) or math.isinf(v):
            raise EngineError(f"Emotion '{name}' is not a number ({v}).")
        if v < 0:
            raise EngineError(f"Emotion '{name}' is negative ({v}); use values from 0 to 1.")
    if sum(values) <= 0:
        raise EngineError("The emotion vector is all zeros; raise at least one emotion or choose 'same as voice'.")
    return values


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        if self.audio is not None and not isinstance(self.audio, Path):
            object.__setattr__(self, "audio", Path(self.audio) if str(self.audio) else None)
        if self.vector is not None and not isinstance(self.vector, tuple):
            object.__setattr__(self, "vector", tuple(self.vector))

    def validate(self) -> Emotion:
        if self.mode not in EMOTION_MODES:
            raise EngineError(f"Unknown emotion mode {self.mode!r}; use one of {', '.join(EMOTION_MODES)}.")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise EngineError(f"Emotion strength must be between 0 and 1 (got {self.alpha}).")
        if self.mode == "audio":
            if not self.audio:
                raise EngineError("Emotion mode 'audio' needs an emotion reference clip.")
            if not self.audio.is_file():
                raise EngineError(f"Emotion clip not found: {self.audio}. Choose an existing audio file.")
        if self.mode == "vector":
            validate_emotion_vector(self.vector)
        return self

    def weights(self) -> list[float] | None:
        """The vector-mode weights after the alpha step (None in other modes)."""
        if self.mode != "vector":
            return None
        return scale_emo_weights(validate_emotion_vector(self.vector), self.alpha)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["audio"] = str(self.audio) if self.audio else None
        d["vector"] = list(self.vector) if self.vector is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict) -> Emotion:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("vector") is not None:
            try:
                known["vector"] = tuple(float(x) for x in known["vector"])
            except (TypeError, ValueError):
                raise EngineError(f"The emotion vector needs numbers; got {known['vector']!r}.") from None
        return cls(**known)


# ------------------------------------------------------------------------------------------ request


@dataclass(frozen=True)
class SynthesisRequest:
    """Everything one synthesis needs: what to say, in which voice, with which emotion and settings."""

    text: str
    voice: Path | str
    emotion: Emotion = field(default_factory=Emotion)
    settings: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        if self.voice is not None and not isinstance(self.voice, Path):
            object.__setattr__(self, "voice", Path(self.voice) if str(self.voice) else None)
        if self.emotion is None:  # None: the defaults (same as the voice; upstream's settings)
            object.__setattr__(self, "emotion", Emotion())
        if self.settings is None:
            object.__setattr__(self, "settings", GenerationSettings())

    @property
    def voice_path(self) -> Path:
        return Path(self.voice)

    def validate(self, limits: ModelLimits | None = None) -> SynthesisRequest:
        """Check the text, the voice and emotion clips and every setting; return self, or raise EngineError."""
        if not isinstance(self.text, str) or not self.text.strip():
            raise EngineError("The text is empty. Type something to say.")
        if not self.voice:
            raise EngineError("No voice chosen. Pick or record a voice clip first.")
        if not Path(self.voice).is_file():
            raise EngineError(f"Voice clip not found: {self.voice}. Choose an existing audio file.")
        if not isinstance(self.emotion, Emotion) or not isinstance(self.settings, GenerationSettings):
            raise EngineError("A synthesis request needs an Emotion and GenerationSettings.")
        self.emotion.validate()
        self.settings.validate(limits)
        return self

    def with_settings(self, **changes: Any) -> SynthesisRequest:
        return replace(self, settings=replace(self.settings, **changes))

    def to_dict(self) -> dict:
        return {"text": self.text, "voice": str(self.voice) if self.voice else "", "emotion": self.emotion.to_dict(),
                "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SynthesisRequest:
        return cls(text=data.get("text", ""), voice=data.get("voice") or "",
                   emotion=Emotion.from_dict(data.get("emotion") or {}),
                   settings=GenerationSettings.from_dict(data.get("settings") or {}))


# ------------------------------------------------------------------------------------------ results


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
class SegmentAudio:
    """One finished segment: its int16 audio (silence interval not included)."""

    index: int
    count: int
    audio: np.ndarray
    text: str


SegmentCallback = Callable[[SegmentAudio], None]


@dataclass
class AudioChunk:
    """A piece of the result audio as soon as it is final, for a player (``Engine.synthesize(on_chunk=...)``).

    The chunks' ``audio`` in the order they arrive, concatenated, is exactly ``SynthesisResult.audio``: the first
    chunk of every segment after the first starts with the silence interval, and ``offset`` is the chunk's first
    sample in the result. Without ``settings.stream`` each segment arrives as one chunk."""

    segment: int  # index of the segment this audio belongs to
    segments: int
    index: int  # chunk number within the segment
    audio: np.ndarray  # int16 [n], 22050 Hz mono
    offset: int  # first sample of ``audio`` in the whole result
    last: bool  # the segment's final chunk


ChunkCallback = Callable[[AudioChunk], None]


class ChunkFeed:
    """Numbers the pieces of the result for ``on_chunk``: offsets, chunk indices, the silence interval put in front
    of the first chunk of every segment after the first (as :func:`core.api.join_segments` joins them)."""

    def __init__(self, callback: ChunkCallback | None, segments: int, gap: np.ndarray) -> None:
        self.callback, self.segments, self.gap = callback, segments, gap
        self.offset = 0
        self.count: dict[int, int] = {}
        self.first_audio: float | None = None  # perf_counter() of the first chunk with sound

    def put(self, segment: int, audio: np.ndarray, last: bool) -> None:
        index = self.count.get(segment, 0)
        self.count[segment] = index + 1
        if index == 0 and segment > 0 and self.gap.size:
            audio = np.concatenate([self.gap, audio])
        if not audio.size:
            return
        if self.first_audio is None:
            self.first_audio = time.perf_counter()
        chunk = AudioChunk(segment, self.segments, index, audio, self.offset, last)
        self.offset += audio.size
        if self.callback is not None:
            self.callback(chunk)


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


STREAM_BEAMS_WARNING = ("Streaming decodes with one beam (num beams {beams} ignored): the best of several beams is "
                        "known only when the segment ends.")  # settings.stream with num_beams > 1 (torch-free here)
NO_SPEECH = ("The model produced no speech for this text. Try again (sampling varies), rephrase the text, "
             "or use another voice clip.")


def silence_gap(interval_silence_ms: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The pause put between two segments."""
    return np.zeros(int(sample_rate * interval_silence_ms / 1000.0), dtype=np.int16)


def join_segments(pieces: Sequence[np.ndarray], interval_silence_ms: int) -> np.ndarray:
    """The one place segments are joined: each segment's audio with the silence interval between them."""
    gap = silence_gap(interval_silence_ms)
    joined: list[np.ndarray] = []
    for i, piece in enumerate(pieces):
        if i and gap.size:
            joined.append(gap)
        joined.append(piece)
    return np.concatenate(joined) if joined else np.zeros(0, dtype=np.int16)


class EngineProtocol(Protocol):
    """What every front end may call. ``synthesize`` is the one synthesis call; ``on_segment`` streams whole
    segments, ``on_chunk`` the pieces of the result as they become final (within a segment with
    ``settings.stream``; concatenated they are exactly the result's audio)."""

    def load(self, model_dir: str | Path | None, device: str = "auto", fp16: bool | None = None,
             on_progress: ProgressCallback | None = None) -> None: ...

    @property
    def loaded(self) -> bool: ...

    @property
    def limits(self) -> ModelLimits | None: ...

    def split_text(self, text: str, max_tokens: int = 120, lang: str | None = None) -> list[str]: ...

    def ignored_marks(self, text: str, max_tokens: int = 120, lang: str | None = None) -> int: ...

    def prepare_voice(self, clip: str | Path) -> object: ...

    def synthesize(
        self,
        request: SynthesisRequest,
        *,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> SynthesisResult: ...
