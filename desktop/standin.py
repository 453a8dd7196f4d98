"""A stand-in engine with exactly the public engine API (:class:`core.api.EngineProtocol`).

It needs no model files: it "speaks" a few shaped tones per segment, reports progress per stage and
segment, honours the cancel event within about 0.02 s, and rejects bad input with the same kind of
:class:`~core.api.EngineError` the real engine raises. Used by the GUI tests and by ``main.py --standin``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from core.api import (
    EMOTION_NAMES,
    NO_SPEECH,
    SAMPLE_RATE,
    STREAM_BEAMS_WARNING,
    Cancelled,
    ChunkCallback,
    ChunkFeed,
    Emotion,
    EngineError,
    ModelLimits,
    Progress,
    ProgressCallback,
    SegmentAudio,
    SegmentCallback,
    SynthesisRequest,
    SynthesisResult,
    join_segments,
    silence_gap,
)
from core.device import DEVICES
from core.models import is_v25_dir
from core.text.normalizer import GlossaryError, TextNormalizer, glossary_entries, use_chinese_grammar

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?;\u3002\uff01\uff1f\uff1b\u2026])\s*|\n+")
_CLAUSE_END = re.compile(r"(?<=[,\uff0c\u3001:\uff1a])\s*")
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\s\u3400-\u9fff\uf900-\ufaff]+")
# Pitch multipliers per emotion (happy higher, sad lower ...), only to make the stand-in audibly react.
_EMOTION_PITCH = dict(zip(EMOTION_NAMES, (1.25, 1.15, 0.85, 1.1, 0.95, 0.8, 1.3, 0.9), strict=True))


def beams_warning(request: SynthesisRequest) -> list[str]:
    """The engine's warning when ``settings.stream`` decodes with one beam instead of ``num_beams``."""
    s = request.settings
    return [STREAM_BEAMS_WARNING.format(beams=s.num_beams)] if s.stream and s.num_beams > 1 else []


def count_tokens(text: str) -> int:
    """A rough token count: one per CJK character, one per other word."""
    return len(_TOKEN.findall(text))


class StandInEngine:
    """Synthetic voice engine; ``step_seconds`` sets how long each of the 4 steps per segment takes."""

    def __init__(self, step_seconds: float = 0.04, load_seconds: float = 0.05) -> None:
        self.step_seconds = step_seconds
        self.load_seconds = load_seconds
        self._loaded = False
        self.device = "cpu"
        self.calls: list[dict] = []  # what synthesize was asked (SynthesisRequest.to_dict()), for tests and the log
        self.prepared: list[str] = []  # the clips prepare_voice was given
        self.loads: list[str] = []  # the folders load was given
        self._limits = ModelLimits(max_mel_tokens=1815, max_text_tokens=600)  # IndexTTS-2's config
        self._normalizer = TextNormalizer()  # only its glossary step: the pronunciation dictionary

    # --- loading ---------------------------------------------------------------------------------
    def load(
        self,
        model_dir: str | Path | None = None,
        device: str = "auto",
        fp16: bool | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if model_dir is not None and not Path(model_dir).is_dir():
            raise EngineError(
                f"Model folder not found: {model_dir}. "
                "Download the IndexTTS-2 models or choose the folder that holds them."
            )
        if device not in DEVICES and not str(device).startswith("cuda:"):
            raise EngineError(f"Unknown device {device!r}; use auto, cuda, cuda:N, cpu or mps.")
        stages = ("Reading config", "Loading GPT", "Loading semantic codec", "Loading vocoder")
        for i, stage in enumerate(stages):
            if on_progress:
                on_progress(Progress(stage=stage, fraction=i / len(stages)))
            time.sleep(self.load_seconds / len(stages))
        if on_progress:
            on_progress(Progress(stage="Ready", fraction=1.0))
        self.device = "cpu" if device == "auto" else device
        base = ModelLimits(max_mel_tokens=1815, max_text_tokens=600)  # IndexTTS-2's config
        self._limits = base.as_v25() if model_dir is not None and is_v25_dir(model_dir) else base  # as the Engine
        self.loads.append(str(model_dir) if model_dir is not None else "")
        self._loaded = True
        log.info("stand-in engine loaded (device=%s, fp16=%s)", self.device, fp16)

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def limits(self) -> ModelLimits | None:
        return self._limits if self._loaded else None

    # --- text ------------------------------------------------------------------------------------
    def set_glossary(self, glossary: str | Path | dict | None) -> None:
        """The pronunciation dictionary, applied as the real engine's text front end does (``Engine.set_glossary``)."""
        try:
            self._normalizer.set_user_glossary(glossary_entries(glossary))
        except GlossaryError as exc:
            raise EngineError(f"The pronunciation dictionary cannot be used: {exc}.") from exc

    def glossary_terms(self, text: str) -> dict:
        return self._normalizer.terms_in(text)

    def ignored_marks(self, text: str, max_tokens: int = 120, lang: str | None = None) -> int:
        """IndexTTS-2.5 drops every ``!`` and ``"`` standing alone (here: every one); 0 for 2.0."""
        return text.count("!") + text.count('"') if self._limits.version == "2.5" else 0

    def split_text(self, text: str, max_tokens: int = 120, lang: str | None = None) -> list[str]:
        """One segment per sentence (after the dictionary's readings); a sentence longer than ``max_tokens`` is split
        at commas, then words."""
        text = self._normalizer.apply_glossary(text, "zh" if use_chinese_grammar(text) else "en")
        segments: list[str] = []
        for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
            if not sentence:
                continue
            if count_tokens(sentence) <= max_tokens:
                segments.append(sentence)
                continue
            pieces: list[str] = []
            for clause in (c for c in _CLAUSE_END.split(sentence) if c):
                pieces.extend([clause] if count_tokens(clause) <= max_tokens else _TOKEN.findall(clause))
            current = ""
            for piece in pieces:
                candidate = f"{current} {piece}".strip() if current else piece
                if current and count_tokens(candidate) > max_tokens:
                    segments.append(current)
                    current = piece
                else:
                    current = candidate
            if current:
                segments.append(current)
        return segments

    # --- synthesis -------------------------------------------------------------------------------
    def _check(self, request: SynthesisRequest) -> None:
        if not self._loaded:
            raise EngineError("The engine is not loaded yet; call load() first.")
        request.validate(self.limits)
        path = request.voice_path
        try:
            info = sf.info(str(path))
        except Exception as exc:  # soundfile raises its own error type for unknown formats
            raise EngineError(
                f"Could not read the voice clip {path.name}: it is not a supported audio file ({exc})."
            ) from exc
        if info.frames == 0:
            raise EngineError(f"The voice clip {path.name} is empty.")

    def prepare_voice(self, clip: str | Path) -> Path:
        """Check the clip as a synthesis would (the stand-in has no conditioning to cache)."""
        path = Path(clip)
        if not path.is_file():
            raise EngineError(f"Voice clip not found: {path}. Choose an existing audio file.")
        self._wait(self.step_seconds, None)
        self.prepared.append(str(path))
        return path

    def _wait(self, seconds: float, cancel: threading.Event | None) -> None:
        end = time.monotonic() + seconds
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.02, left))

    def _render(self, text: str, voice: Path, emotion: Emotion, rng: np.random.Generator) -> np.ndarray:
        base = 110.0 + (zlib.crc32(str(voice).encode()) % 100)
        if emotion.mode == "vector" and emotion.vector:
            weights = np.asarray(emotion.vector, dtype=np.float64) * emotion.alpha
            pitch = np.asarray([_EMOTION_PITCH[n] for n in EMOTION_NAMES])
            base *= 1.0 + float(np.dot(weights, pitch - 1.0))
        syllables = max(1, count_tokens(text))
        syl = int(0.16 * SAMPLE_RATE)
        t = np.arange(syl) / SAMPLE_RATE
        envelope = np.sin(np.pi * np.arange(syl) / syl) ** 2
        parts = []
        for _ in range(syllables):
            f0 = base * rng.uniform(0.9, 1.15)
            tone = sum((0.5 / k) * np.sin(2 * np.pi * f0 * k * t) for k in (1, 2, 3))
            parts.append(tone * envelope)
        wave = np.concatenate(parts) * 0.6
        wave += rng.normal(0.0, 0.003, wave.shape)
        return np.clip(wave * 32767, -32768, 32767).astype(np.int16)

    def segments_for(self, request: SynthesisRequest) -> list[str]:
        """The segments to speak (a subclass may return none: the no-speech case)."""
        return self.split_text(request.text, request.settings.max_text_tokens_per_segment)

    def warnings_for(self, request: SynthesisRequest, segments: list[str]) -> list[str]:
        """Warnings the result carries (none here; tests override it)."""
        return []

    def synthesize(
        self,
        request: SynthesisRequest,
        *,
        on_progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> SynthesisResult:
        self._check(request)
        settings, emotion, voice = request.settings, request.emotion, request.voice_path
        self.calls.append(request.to_dict())
        start = time.perf_counter()
        segments = self.segments_for(request)
        rng = np.random.default_rng(settings.seed)
        report = on_progress or (lambda p: None)
        report(Progress(stage="Encoding voice", fraction=0.0, segments=len(segments)))
        self._wait(self.step_seconds, cancel)
        steps = ("Generating speech tokens", "Computing semantic features", "Diffusion", "Vocoding")
        pieces: list[np.ndarray] = []
        texts: list[str] = []
        feed = ChunkFeed(on_chunk, len(segments), silence_gap(settings.interval_silence_ms))
        for index, segment in enumerate(segments):
            audio = self._render(segment, voice, emotion, rng)
            # settings.stream: a piece of the segment after each step, as the engine renders chunks while decoding
            parts = np.array_split(audio, len(steps)) if settings.stream else [audio]
            for k, stage in enumerate(steps):
                fraction = (index + k / len(steps)) / len(segments)
                report(
                    Progress(
                        stage=stage, fraction=fraction, segment=index + 1, segments=len(segments), detail=segment[:40]
                    )
                )
                self._wait(self.step_seconds, cancel)
                if settings.stream:
                    feed.put(index, parts[k], last=k == len(steps) - 1)
            pieces.append(audio)
            texts.append(segment)
            if on_segment is not None:
                on_segment(SegmentAudio(index=index, count=len(segments), audio=audio, text=segment))
            if not settings.stream:
                feed.put(index, audio, last=True)
        if not pieces:
            raise EngineError(NO_SPEECH)
        report(Progress(stage="Done", fraction=1.0, segment=len(segments), segments=len(segments)))
        return SynthesisResult(
            audio=join_segments(pieces, settings.interval_silence_ms),
            timings={"total": time.perf_counter() - start},
            segments=texts,
            warnings=beams_warning(request) + self.warnings_for(request, segments),
        )
