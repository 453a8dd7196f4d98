"""The synthesis engine: IndexTTS2 end to end, load once, reuse.

``Engine.load`` builds a complete :class:`~core.pipeline.Pipeline` from the official files and swaps it in
(a failed load keeps the previous one); ``Engine.synthesize(request)`` reproduces upstream's
``IndexTTS2.infer`` (``indextts/infer_v2.py``) for the same inputs, with per-voice caching (memory and disk,
keyed by the clip's content), progress reports, cancellation and, through ``on_segment``, each segment's
audio as soon as it is ready. One lock covers a whole job (voice preparation and lazy loads included).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from .api import (
    NO_SPEECH,
    SAMPLE_RATE,
    Cancelled,
    ChunkCallback,
    ChunkFeed,
    EngineError,
    GenerationSettings,
    ModelLimits,
    Progress,
    ProgressCallback,
    SegmentAudio,
    SegmentCallback,
    SynthesisRequest,
    SynthesisResult,
    join_segments,
    scale_emo_weights,
    silence_gap,
    validate_emotion_vector,
)
from .device import DeviceChoice, probe
from .models import ModelPaths
from .pipeline import Pipeline, build_pipeline, content_condition, resolve_paths
from .streaming import STREAM_BEAMS_WARNING, StreamPlan
from .voice_cache import VOICE_KEYS, Voice, VoiceCache, clip_key

if TYPE_CHECKING:
    from .audio import SpeakerAudio
    from .pipeline_v25 import V25Pipeline
    from .text.normalizer import Glossary

    AnyPipeline = Pipeline | V25Pipeline  # the version seam: IndexTTS-2.0 or IndexTTS-2.5, told by the folder's files

log = logging.getLogger(__name__)

MAX_REFERENCE_SECONDS = 15.0
FRAMES_PER_CODE = 1.72

_T = TypeVar("_T")


def _read_clip(loader: Callable[[str | Path], _T], clip: str | Path, role: str) -> _T:
    """``loader(clip)`` with an unreadable/silent/too-short clip reported as a one-line EngineError."""
    from .audio import AudioError

    try:
        return loader(clip)
    except AudioError as exc:
        raise EngineError(f"The {role} clip cannot be used: {exc}") from exc


@dataclass
class SegmentTrace:
    """Intermediates of one segment (for parity tests and diagnostics)."""

    text_ids: list[int]
    codes: torch.Tensor
    hit_max_tokens: bool
    latent: torch.Tensor | None = None
    mel: torch.Tensor | None = None
    wav: torch.Tensor | None = None


STREAM_V25_WARNING = ("Streaming is not available with IndexTTS-2.5: each segment plays as soon as it is rendered.")


@dataclass(frozen=True)
class _Segment:
    """One segment of the job's text: its words and the ids the GPT reads."""

    text: str
    ids: list[int]


@dataclass
class _Job:
    voice: Voice
    emo_cond_emb: torch.Tensor
    alpha: float
    weights: list[float] | None
    use_random: bool
    settings: GenerationSettings
    segments: list[_Segment]
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    noise: Callable[[int, int], torch.Tensor] | None = None  # (segment index, frames) -> [1, 80, frames]
    trace: list[SegmentTrace] | None = None
    emovec: torch.Tensor | None = None
    lang: int | None = None  # IndexTTS-2.5's language index for the GPT (None with 2.0)
    feed: ChunkFeed | None = None  # the pieces of the result for on_chunk
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        log.warning(message)
        if message not in self.warnings:
            self.warnings.append(message)


def _glossary(source: str | Path | Glossary | None) -> dict[str, str | Mapping[str, str]]:
    from .text.normalizer import GlossaryError, glossary_entries

    try:
        return glossary_entries(source)
    except GlossaryError as exc:
        raise EngineError(f"The pronunciation dictionary cannot be used: {exc}.") from exc


def _text_errors() -> tuple[type[Exception], ...]:
    from .text import TextError
    from .text.fst import GrammarError
    from .text.tokenizer import TokenizerError

    return TextError, GrammarError, TokenizerError


class Engine:
    """IndexTTS2 inference. Thread-safe: one job at a time holds the models (the GUI runs jobs in a worker)."""

    def __init__(self, cache_dir: str | Path | None = None, *, pipeline: Pipeline | None = None,
                 glossary: str | Path | Glossary | None = None) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._glossary = _glossary(glossary)  # the user's pronunciation dictionary, over the model folder's
        self._lock = threading.RLock()
        self._pipeline: AnyPipeline | None = None
        self.device_choice: DeviceChoice | None = None
        self.stream_plan = StreamPlan()  # how settings.stream cuts a segment into chunks (core.streaming)
        if pipeline is not None:
            self._adopt(pipeline)

    # ------------------------------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    @property
    def pipeline(self) -> AnyPipeline:
        """The loaded pipeline (an EngineError before the first successful load)."""
        p = self._pipeline
        if p is None:
            raise EngineError("The models are not loaded yet.")
        return p

    @property
    def limits(self) -> ModelLimits | None:
        return self._pipeline.limits if self._pipeline is not None else None

    @property
    def device(self) -> torch.device:
        return self._pipeline.device if self._pipeline is not None else torch.device("cpu")

    def load(
        self,
        model_dir: str | Path | None = None,
        device: str = "auto",
        fp16: bool | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        paths: ModelPaths | None = None,
    ) -> None:
        """Build every stage from the official files and swap them in at once; on failure keep what was loaded.

        The version (IndexTTS-2.0 or 2.5) is told by the folder's files (a 2.5 folder has ``codec.pth``), never by
        its config; ``limits`` then says which one is loaded. ``paths`` overrides the upstream 2.0 folder layout;
        ``fp16=None`` is the CUDA default (core.device)."""
        from .models import is_v25_dir

        new: AnyPipeline
        choice = probe(device, fp16).require()
        if paths is None and model_dir is not None and is_v25_dir(model_dir):
            choice = replace(choice, fp16=False)  # 2.5 runs in float32
            new = self._load_v25(Path(model_dir), choice, on_progress)
        else:
            new = build_pipeline(paths or resolve_paths(model_dir), choice, on_progress)
        with self._lock:  # waits for a running job: the models it uses stay until it ends
            self._adopt(new)
            self.device_choice = choice
        if on_progress:
            on_progress(Progress("Models ready", 1.0))
        log.info("engine ready on %s (fp16=%s)", new.device, new.fp16)

    @staticmethod
    def _load_v25(folder: Path, choice: DeviceChoice, on_progress: ProgressCallback | None) -> V25Pipeline:
        from .pipeline_v25 import V25Pipeline, resolve_v25_paths

        paths = resolve_v25_paths(folder)
        if on_progress:
            on_progress(Progress("Loading IndexTTS-2.5", 0.0))
        return V25Pipeline.load(paths, choice.device)

    def _adopt(self, pipeline: AnyPipeline) -> None:
        if pipeline.voices is None:
            pipeline.voices = VoiceCache(self._cache_dir, pipeline.fingerprint, pipeline.device)
        pipeline.frontend.normalizer.set_user_glossary(self._glossary)
        self._pipeline = pipeline

    def set_glossary(self, glossary: str | Path | Glossary | None) -> None:
        """Use this pronunciation dictionary (a glossary YAML file or ``term -> reading`` entries, see
        :func:`core.text.normalizer.load_glossary`) over the model folder's ``glossary.yaml``, from the next job on."""
        entries = _glossary(glossary)
        with self._lock:
            self._glossary = entries
            if self._pipeline is not None:
                self._pipeline.frontend.normalizer.set_user_glossary(entries)

    def glossary_terms(self, text: str) -> dict[str, str | Mapping[str, str]]:
        """The glossary entries (model folder's and user's) that apply to ``text``: what a cached result of this
        text depends on besides the text itself. Before the models are loaded: the user's entries alone."""
        p = self._pipeline
        if p is None:
            from .text.normalizer import TextNormalizer

            return TextNormalizer(self._glossary).terms_in(text)
        return p.frontend.normalizer.terms_in(text)

    # ------------------------------------------------------------------------------------------- text

    def split_text(self, text: str, max_tokens: int = 120, lang: str | None = None) -> list[str]:
        """How ``text`` will be split into segments (for previews); ``lang`` is IndexTTS-2.5's (None: guessed)."""
        if not text.strip():
            return []
        return [seg.text for seg in self._segments(self.pipeline, text, max_tokens, lang)[0]]

    def ignored_marks(self, text: str, max_tokens: int = 120, lang: str | None = None) -> int:
        """How many ``!`` / ``"`` of ``text`` IndexTTS-2.5 drops before its GPT (the tokenizer left them alone; their
        ids collide with the start/stop ids, as upstream): such a mark has no effect. Always 0 with 2.0."""
        from .pipeline_v25 import V25Pipeline
        from .text.v25 import guess_language

        p = self.pipeline
        if not isinstance(p, V25Pipeline) or not text.strip():
            return 0
        try:
            return sum(s.ignored_tokens for s in p.frontend.segments(text, lang or guess_language(text), max_tokens))
        except _text_errors() as exc:
            raise EngineError(f"The text cannot be read: {exc}") from exc

    @staticmethod
    def _segments(p: AnyPipeline, text: str, max_tokens: int, lang: str | None) -> tuple[list[_Segment], int | None]:
        """The segments of ``text`` and, for IndexTTS-2.5, the GPT's language index (None for 2.0)."""
        from .pipeline_v25 import V25Pipeline

        try:
            if isinstance(p, V25Pipeline):
                from .text.v25 import guess_language, lang_index

                code = lang or guess_language(text)
                return ([_Segment(seg.text, seg.gpt_input) for seg in p.frontend.segments(text, code, max_tokens)],
                        lang_index(code))
            pieces = p.frontend.split_segments(p.frontend.tokenize(text), max_tokens)
            return [_Segment("".join(s).replace("\u2581", " ").strip(), p.frontend.convert_tokens_to_ids(s))
                    for s in pieces], None
        except _text_errors() as exc:
            raise EngineError(f"The text cannot be read: {exc}") from exc

    # ------------------------------------------------------------------------------------------ voices

    @staticmethod
    def _semantic_features(p: AnyPipeline, wav16k: torch.Tensor) -> torch.Tensor:
        from .features import seamless_features

        if p.semantic is None:
            raise EngineError("w2v-BERT is not loaded; semantic features must be given.")
        feats, mask = seamless_features(wav16k)
        return p.semantic.embed(feats.to(p.device), mask.to(p.device))

    def prepare_voice(self, clip: str | Path, spk_cond_emb: torch.Tensor | None = None) -> Voice:
        """Speaker conditioning for ``clip`` (memory cache, then disk cache, then computed).

        ``spk_cond_emb`` supplies precomputed semantic features instead of running w2v-BERT (test seam); such
        conditioning is not the clip's own and is never cached.
        """
        with self._lock:
            return self._prepare_voice(self.pipeline, Path(clip), spk_cond_emb)

    @torch.inference_mode()
    def _prepare_voice(self, p: AnyPipeline, clip: Path, spk_cond_emb: torch.Tensor | None) -> Voice:
        from .audio import load_speaker_audio
        from .features import campplus_input, mel_spectrogram
        from .pipeline_v25 import V25Pipeline

        assert p.voices is not None
        key = clip_key(clip)
        given = spk_cond_emb is not None
        kind = "voice25" if isinstance(p, V25Pipeline) else "voice"  # 2.5 conditioning differs from 2.0's
        if not given:
            cached = p.voices.get(kind, key)
            if cached is not None:
                return Voice(key, *(cached[k] for k in VOICE_KEYS))
        audio = _read_clip(load_speaker_audio, clip, "voice")
        if isinstance(p, V25Pipeline):
            return self._prepare_voice_v25(p, key, audio, spk_cond_emb)
        spec = p.cfg.require("s2mel").preprocess_params
        sp = spec.spect_params
        if spk_cond_emb is None:
            spk_cond_emb = self._semantic_features(p, audio.audio_16k)
        spk_cond_emb = spk_cond_emb.to(p.device).float()
        _, s_ref = p.codec.quantize(spk_cond_emb)
        ref_mel = mel_spectrogram(
            audio.audio_22k.to(p.device), n_fft=sp.n_fft, win=sp.win_length, hop=sp.hop_length, n_mels=sp.n_mels,
            sr=spec.sr, fmin=sp.fmin, fmax=sp.fmax,
        )
        style = p.campplus(campplus_input(audio.audio_16k).to(p.device))
        prompt_condition = p.s2mel.length_regulator(s_ref, torch.tensor([ref_mel.shape[-1]], device=p.device))
        spk_latent = p.gpt.get_conditioning(spk_cond_emb)
        voice = Voice(key, spk_cond_emb, style, ref_mel, prompt_condition, spk_latent)
        if not given:
            p.voices.put("voice", key, voice.tensors())
        return voice

    def _prepare_voice_v25(self, p: V25Pipeline, key: str, audio: SpeakerAudio,
                           spk_cond_emb: torch.Tensor | None) -> Voice:
        """IndexTTS-2.5: the clip's mel and CAMPPlus style, then its conditioning (no quantiser, no GPT pass)."""
        from .pipeline_v25 import mel_and_style, speaker_conditioning

        given = spk_cond_emb is not None
        if spk_cond_emb is None:
            spk_cond_emb = self._semantic_features(p, audio.audio_16k)
        ref_mel, style = mel_and_style(p, audio)
        c = speaker_conditioning(p, spk_cond_emb, style, ref_mel)
        voice = Voice(key, c.spk_cond_emb, c.style, c.ref_mel, c.prompt_condition, c.spk_latent)
        if not given:
            assert p.voices is not None
            p.voices.put("voice25", key, voice.tensors())
        return voice

    def emotion_features(self, clip: str | Path) -> torch.Tensor:
        """``emo_cond_emb`` of a clip: the 16 kHz load through w2v-BERT (cached by content)."""
        with self._lock:
            return self._emotion_features(self.pipeline, Path(clip))

    @torch.inference_mode()
    def _emotion_features(self, p: AnyPipeline, clip: Path) -> torch.Tensor:
        from .audio import load_emotion_audio

        assert p.voices is not None
        key = clip_key(clip, "emotion")
        cached = p.voices.get("emo", key)
        if cached is not None:
            return cached["emo_cond_emb"]
        emb = self._semantic_features(p, _read_clip(load_emotion_audio, clip, "emotion").to(p.device))
        p.voices.put("emo", key, {"emo_cond_emb": emb})
        return emb

    # --------------------------------------------------------------------------------------- synthesis

    def synthesize(self, request: SynthesisRequest, *, on_progress: ProgressCallback | None = None,
                   on_segment: SegmentCallback | None = None,
                   cancel: threading.Event | None = None,
                   on_chunk: ChunkCallback | None = None) -> SynthesisResult:
        """Speak ``request``: the whole audio, its segments' texts, timings and warnings.

        ``on_segment`` receives each segment's audio as soon as it is rendered (streaming playback); ``on_chunk``
        receives the result's audio piece by piece as soon as each piece is final (:class:`core.api.AudioChunk`: with
        ``settings.stream`` several chunks per segment while it is decoded, otherwise one per segment; the pieces
        joined are the result's audio, silence intervals included). The result, warnings and errors are the same
        with or without the callbacks."""
        return self._synthesize(request, on_progress, on_segment, cancel, on_chunk=on_chunk)[0]

    def synthesize_traced(
        self, request: SynthesisRequest, *, spk_cond_emb: torch.Tensor | None = None,
        emo_cond_emb: torch.Tensor | None = None, noise: Callable[[int, int], torch.Tensor] | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> tuple[SynthesisResult, Voice, list[SegmentTrace], torch.Tensor]:
        """``synthesize`` with the stage seams tests and diagnostics need: precomputed semantic features instead
        of w2v-BERT, injected diffusion noise ``noise(segment, frames)``, and every segment's intermediates.
        Returns ``(result, voice, traces, emovec)``. A streamed segment's trace has its codes and audio only; its
        chunks take their noise from ``noise(segment, frames)`` at the frames the non-streamed render would."""
        result, job = self._synthesize(request, None, None, None, spk_cond_emb=spk_cond_emb,
                                       emo_cond_emb=emo_cond_emb, noise=noise, trace=[], on_chunk=on_chunk)
        assert job.trace is not None and job.emovec is not None
        return result, job.voice, job.trace, job.emovec

    def _synthesize(self, request: SynthesisRequest, on_progress: ProgressCallback | None,
                    on_segment: SegmentCallback | None, cancel: threading.Event | None, *,
                    spk_cond_emb: torch.Tensor | None = None, emo_cond_emb: torch.Tensor | None = None,
                    noise: Callable[[int, int], torch.Tensor] | None = None,
                    trace: list[SegmentTrace] | None = None,
                    on_chunk: ChunkCallback | None = None) -> tuple[SynthesisResult, _Job]:
        if not isinstance(request, SynthesisRequest):
            raise TypeError(f"Engine.synthesize takes a SynthesisRequest, not {type(request).__name__}")
        with self._lock:
            p = self.pipeline
            request.validate(p.limits)
            job = self._job(p, request, on_progress, cancel, spk_cond_emb=spk_cond_emb, emo_cond_emb=emo_cond_emb)
            job.noise, job.trace = noise, trace
            job.feed = ChunkFeed(on_chunk, len(job.segments), silence_gap(job.settings.interval_silence_ms))
            pieces: list[np.ndarray] = []
            for seg in self._run(p, job):
                pieces.append(seg.audio)
                if on_segment is not None and seg.audio.size:
                    on_segment(seg)
        if not any(piece.size for piece in pieces):
            raise EngineError(NO_SPEECH)
        texts = [seg.text for seg in job.segments]
        audio = join_segments(pieces, job.settings.interval_silence_ms)
        return SynthesisResult(audio, SAMPLE_RATE, dict(job.timings), texts, list(job.warnings)), job

    def _job(self, p: AnyPipeline, request: SynthesisRequest, on_progress: ProgressCallback | None,
             cancel: threading.Event | None, *, spk_cond_emb: torch.Tensor | None = None,
             emo_cond_emb: torch.Tensor | None = None) -> _Job:
        settings, emotion, text = request.settings, request.emotion, request.text
        timings: dict[str, float] = {}
        t0 = time.perf_counter()

        def report(stage: str, fraction: float) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if on_progress:
                on_progress(Progress(stage, fraction))

        segments, lang = self._segments(p, text, settings.max_text_tokens_per_segment, settings.lang)
        if not segments:
            raise EngineError("Nothing to say: the text has no speakable characters.")

        report("Preparing voice", 0.0)
        v = self._prepare_voice(p, request.voice_path, spk_cond_emb)
        timings["voice"] = time.perf_counter() - t0

        # Emotion, as infer_v2: a vector (given or from text) replaces the emotion clip; without an
        # external emotion clip the speaker clip is the emotion reference and alpha is 1.
        weights: list[float] | None = None
        alpha = emotion.alpha
        emo_clip: Path | None = emotion.audio if emotion.mode == "audio" else None
        if emotion.mode == "text":
            report("Reading emotion from text", 0.02)
            weights = scale_emo_weights(validate_emotion_vector(p.qwen_model().vector(emotion.text or text)), alpha)
        elif emotion.mode == "vector":
            weights = emotion.weights()
        if weights is not None:
            emo_clip = None
        if emo_clip is None:
            alpha = 1.0
        t1 = time.perf_counter()
        report("Preparing emotion", 0.04)
        if emo_cond_emb is None:
            emo_cond_emb = self._emotion_features(p, emo_clip if emo_clip is not None else request.voice_path)
        timings["emotion"] = time.perf_counter() - t1
        return _Job(v, emo_cond_emb.to(p.device), alpha, weights, emotion.random, settings, segments,
                    on_progress, cancel, lang=lang, timings=timings)

    @staticmethod
    def _emovec(p: AnyPipeline, job: _Job) -> torch.Tensor:
        from .gpt.emotion import blend_emovec

        v = job.voice
        emovec = p.gpt.merge_emovec(v.spk_cond_emb, job.emo_cond_emb, job.alpha)
        if job.weights is not None:
            generator = None
            if job.use_random:
                generator = torch.Generator()
                generator.manual_seed(job.settings.seed if job.settings.seed is not None else random.randrange(2**63))
            emovec_mat, weight_sum = p.emotions.mix(job.weights, v.style.cpu(), use_random=job.use_random,
                                                    generator=generator)
            emovec = blend_emovec(emovec_mat.to(p.device), weight_sum, emovec)
        return emovec

    @torch.inference_mode()
    def _run(self, p: AnyPipeline, job: _Job) -> Iterator[SegmentAudio]:
        from .gpt.generate import generate
        from .pipeline_v25 import V25Pipeline

        s = job.settings
        n = len(job.segments)
        timings = job.timings
        for key in ("gpt", "gpt_latent", "s2mel", "vocoder"):
            timings.setdefault(key, 0.0)
        if s.stream and isinstance(p, V25Pipeline):
            job.warn(STREAM_V25_WARNING)
            s = job.settings = replace(s, stream=False)
        if s.stream and s.num_beams > 1:
            job.warn(STREAM_BEAMS_WARNING.format(beams=s.num_beams))
            s = job.settings = replace(s, num_beams=1)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        emovec = job.emovec = self._emovec(p, job)
        v = job.voice
        start = time.perf_counter()
        before = timings.get("voice", 0.0) + timings.get("emotion", 0.0)
        feed = job.feed or ChunkFeed(None, n, silence_gap(s.interval_silence_ms))

        def progress(stage: str, seg: int, within: float) -> None:
            if job.cancel is not None and job.cancel.is_set():
                raise Cancelled()
            if job.on_progress:
                frac = 0.05 + 0.95 * (seg + within) / n
                job.on_progress(Progress(stage, min(frac, 1.0), seg + 1, n))

        for i, seg in enumerate(job.segments):
            ids, text = seg.ids, seg.text
            if s.stream and not isinstance(p, V25Pipeline):
                streamed = self._stream_segment(p, job, i, ids, text, feed, progress)
                if streamed.audio.size and "first_segment" not in timings:
                    timings["first_segment"] = time.perf_counter() - start + before
                yield streamed
                continue
            progress("Generating speech codes", i, 0.0)
            t = time.perf_counter()
            codes, hit_max = generate(p.gpt, ids, v.spk_latent, emovec, s, cancel=job.cancel, lang=job.lang)
            timings["gpt"] += time.perf_counter() - t
            if not self._codes_ok(job, i, codes, hit_max):
                feed.put(i, np.zeros(0, dtype=np.int16), True)
                yield SegmentAudio(i, n, np.zeros(0, dtype=np.int16), text)
                continue
            latent = None
            if isinstance(p, V25Pipeline):  # no second GPT pass: the codec decodes the codes
                progress("Rendering spectrogram", i, 0.5)
                t = time.perf_counter()
                mel = self._mel_v25(p, job, i, codes, progress)
            else:
                t = time.perf_counter()
                latent = p.gpt.latent(ids, v.spk_latent, emovec, codes)
                timings["gpt_latent"] += time.perf_counter() - t
                progress("Rendering spectrogram", i, 0.5)
                t = time.perf_counter()
                mel = self._mel(p, job, i, codes, latent, progress)
            timings["s2mel"] += time.perf_counter() - t
            progress("Vocoding", i, 0.95)
            t = time.perf_counter()
            wav = p.vocoder(mel.float()).reshape(1, -1)
            timings["vocoder"] += time.perf_counter() - t
            pcm = torch.clamp(32767 * wav, -32767.0, 32767.0).cpu()
            if job.trace is not None:
                kept = None if latent is None else latent.float().cpu()
                job.trace.append(SegmentTrace(ids, codes.cpu(), hit_max, kept, mel.cpu(), pcm))
            audio = pcm.to(torch.int16).numpy().reshape(-1)
            if "first_segment" not in timings:
                timings["first_segment"] = time.perf_counter() - start + before
            feed.put(i, audio, True)
            yield SegmentAudio(i, n, audio, text)
        if feed.first_audio is not None:
            timings["first_audio"] = feed.first_audio - start + before
        stages = ("voice", "emotion", "gpt", "gpt_latent", "s2mel", "vocoder")
        timings["total"] = sum(timings.get(k, 0.0) for k in stages)
        if job.on_progress:
            job.on_progress(Progress("Done", 1.0, n, n))

    @staticmethod
    def _codes_ok(job: _Job, i: int, codes: torch.Tensor, hit_max: bool) -> bool:
        """Warn about a segment cut at the token limit or without speech; False when it has no codes."""
        if hit_max:
            job.warn(f"Segment {i + 1} reached the limit of {job.settings.max_mel_tokens} speech tokens and may be cut "
                     "off; lower 'tokens per segment' or raise 'max mel tokens'.")
        if codes.numel() == 0:
            job.warn(f"Segment {i + 1} produced no speech.")
            return False
        return True

    def _stream_segment(self, p: Pipeline, job: _Job, i: int, ids: list[int], text: str, feed: ChunkFeed,
                        progress: Callable[[str, int, float], None]) -> SegmentAudio:
        """Decode segment ``i`` while rendering it in chunks (core.streaming); each final piece goes to ``feed``."""
        from .gpt.generate import generate
        from .streaming import ChunkRenderer, SegmentStreamer, frames_for_codes, to_pcm16

        s, v, n = job.settings, job.voice, len(job.segments)
        assert job.emovec is not None
        hop = p.cfg.require("s2mel").preprocess_params.spect_params.hop_length
        progress("Streaming speech", i, 0.0)
        t = time.perf_counter()
        renderer = ChunkRenderer(p, v, list(ids), job.emovec, s, self.stream_plan, self._stream_noise(p, job, i),
                                 job.cancel, job.timings)
        pieces: list[np.ndarray] = []

        def emit(wav: np.ndarray, last: bool) -> None:
            pieces.append(to_pcm16(wav))
            feed.put(i, pieces[-1], last)
            progress("Streaming speech", i, 0.95 * (1.0 - 0.5 ** len(pieces)))  # the length is known only at the end

        streamer = SegmentStreamer(self.stream_plan, renderer, emit, hop)
        codes, hit_max = generate(p.gpt, ids, v.spk_latent, job.emovec, s, cancel=job.cancel, callback=streamer.push)
        streamer.finish()
        job.timings["gpt"] += time.perf_counter() - t - renderer.seconds
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        if self._codes_ok(job, i, codes, hit_max) and job.noise is None:
            # what the non-streamed render draws from the global generator: the next segment's decode then sees the
            # same random stream, so a seed gives the same codes with and without streaming (one beam)
            torch.randn((1, v.ref_mel.shape[1], v.ref_mel.shape[-1] + frames_for_codes(codes.numel())),
                        device=p.device)
        if job.trace is not None:
            pcm = torch.from_numpy(audio).float().reshape(1, -1)
            job.trace.append(SegmentTrace(list(ids), codes.cpu(), hit_max, wav=pcm))
        return SegmentAudio(i, n, audio, text)

    @staticmethod
    def _stream_noise(p: Pipeline, job: _Job, i: int) -> Callable[[int, int], torch.Tensor]:
        """The diffusion noise of streamed segment ``i`` by target frames: the test seam's at the frames of the
        non-streamed render, else drawn for the segment from its own generator (the global one stays untouched)."""
        from .streaming import SegmentNoise

        seam, t_ref = job.noise, job.voice.ref_mel.shape[-1]
        if seam is not None:
            return lambda lo, hi: seam(i, t_ref + hi)[..., t_ref + lo:t_ref + hi]
        seed = job.settings.seed
        seed = (seed * 1_000_003 + i) % 2**63 if seed is not None else random.randrange(2**63)
        return SegmentNoise(job.voice.ref_mel.shape[1], p.device, seed)

    @staticmethod
    def _mel_v25(p: V25Pipeline, job: _Job, index: int, codes: torch.Tensor,
                 progress: Callable[[str, int, float], None]) -> torch.Tensor:
        """IndexTTS-2.5: codec decode, the duration factor's length, CFM (the test seam's noise at the same frames)."""
        from .pipeline_v25 import V25Conditioning, segment_mel
        from .s2mel.v25 import target_length

        v, s = job.voice, job.settings
        frames = v.ref_mel.shape[-1] + target_length(2 * codes.numel(), s.duration_factor)
        noise = job.noise(index, frames) if job.noise is not None else None

        def on_step(k: int, total: int) -> None:
            progress("Rendering spectrogram", index, 0.5 + 0.45 * k / max(total, 1))

        voice = V25Conditioning(v.spk_cond_emb, v.style, v.ref_mel, v.prompt_condition, v.spk_latent)
        return segment_mel(p, voice, codes, s.duration_factor, steps=s.diffusion_steps, cfg_rate=s.cfg_rate,
                           noise=noise, cancel=job.cancel, on_step=on_step, fast=s.fast)

    @staticmethod
    def _mel(p: Pipeline, job: _Job, index: int, codes: torch.Tensor, latent: torch.Tensor,
             progress: Callable[[str, int, float], None]) -> torch.Tensor:
        v = job.voice
        s = job.settings
        s_infer = content_condition(p, codes, latent)
        code_lens = torch.tensor([codes.numel()], dtype=torch.long, device=p.device)
        target = (code_lens * FRAMES_PER_CODE).long()  # float32 product, as upstream
        cond = p.s2mel.length_regulator(s_infer, target)
        mu = torch.cat([v.prompt_condition, cond], dim=1)
        frames = mu.shape[1]
        noise = job.noise(index, frames) if job.noise is not None else None

        def on_step(k: int, total: int) -> None:
            progress("Rendering spectrogram", index, 0.5 + 0.45 * k / max(total, 1))

        mel = p.s2mel.cfm.inference(
            mu, torch.tensor([frames], device=p.device), v.ref_mel, v.style, steps=s.diffusion_steps,
            cfg_rate=s.cfg_rate, noise=noise, cancel=job.cancel, on_step=on_step, fast=s.fast,
        )
        return mel[:, :, v.ref_mel.shape[-1]:]
