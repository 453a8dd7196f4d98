"""The synthesis engine: IndexTTS2 end to end, load once, reuse.

``Engine.load`` builds every stage from the official files; ``Engine.synthesize`` reproduces upstream's
``IndexTTS2.infer`` (``indextts/infer_v2.py``) for the same inputs, with per-voice caching (memory and disk,
keyed by the clip's content), progress reports and cancellation. ``synthesize_stream`` yields each
segment's audio as soon as it is ready.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from .api import (
    SAMPLE_RATE,
    Cancelled,
    Emotion,
    EngineError,
    GenerationSettings,
    Progress,
    ProgressCallback,
    SegmentAudio,
    SynthesisResult,
    validate_emotion_vector,
)
from .checkpoints import CheckpointError
from .config import ConfigError, IndexTTSConfig, load_config
from .models import ModelPaths, check, describe, problems

log = logging.getLogger(__name__)

MAX_REFERENCE_SECONDS = 15.0
FRAMES_PER_CODE = 1.72


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. An unavailable explicit choice is a clear error."""
    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("CUDA was requested but no usable NVIDIA GPU/driver was found; choose 'auto' or 'cpu'.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("MPS (Apple GPU) was requested but is not available; choose 'auto' or 'cpu'.")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise EngineError(f"Unknown device {device!r}; use auto, cuda, cpu or mps.") from exc


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


_T = TypeVar("_T")


def _read_clip(loader: Callable[[str | Path], _T], clip: str | Path, role: str) -> _T:
    """``loader(clip)`` with an unreadable/silent/too-short clip reported as a one-line EngineError."""
    from .audio import AudioError

    try:
        return loader(clip)
    except AudioError as exc:
        raise EngineError(f"The {role} clip cannot be used: {exc}") from exc


@dataclass
class Voice:
    """Everything IndexTTS2 derives from a speaker clip; computed once per clip."""

    key: str
    spk_cond_emb: torch.Tensor  # [1, T_w, 1024] normalised w2v-BERT features
    style: torch.Tensor  # [1, 192] CAMPPlus
    ref_mel: torch.Tensor  # [1, 80, T_ref]
    prompt_condition: torch.Tensor  # [1, T_ref, C]
    spk_latent: torch.Tensor  # [1, 32, D] GPT speaker conditioning
    emo_cond_emb: torch.Tensor | None = None  # the clip through the emotion path (16 kHz load)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {k: getattr(self, k) for k in ("spk_cond_emb", "style", "ref_mel", "prompt_condition", "spk_latent")}
        if self.emo_cond_emb is not None:
            out["emo_cond_emb"] = self.emo_cond_emb
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


@dataclass
class SegmentTrace:
    """Intermediates of one segment (for parity tests and diagnostics)."""

    text_ids: list[int]
    codes: torch.Tensor
    hit_max_tokens: bool
    latent: torch.Tensor | None = None
    mel: torch.Tensor | None = None
    wav: torch.Tensor | None = None


@dataclass
class _Job:
    text: str
    voice: Voice
    emo_cond_emb: torch.Tensor
    alpha: float
    weights: list[float] | None
    use_random: bool
    settings: GenerationSettings
    segments: list[list[str]]
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    noise: Callable[[int, int], torch.Tensor] | None = None  # (segment index, frames) -> [1, 80, frames]
    trace: list[SegmentTrace] | None = None
    emovec: torch.Tensor | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Engine:
    """IndexTTS2 inference. Thread-compatible: one synthesis at a time (the GUI runs it in a worker)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cfg: IndexTTSConfig | None = None
        self.paths: ModelPaths | None = None
        self.device = torch.device("cpu")
        self.fp16 = False
        self._voices: dict[str, Voice] = {}
        self._emotions: dict[str, torch.Tensor] = {}
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self.qwen = None

    # ------------------------------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self.cfg is not None

    def load(
        self,
        model_dir: str | Path | None = None,
        device: str = "auto",
        fp16: bool = False,
        on_progress: ProgressCallback | None = None,
        *,
        paths: ModelPaths | None = None,
    ) -> None:
        """Build every stage from the official files. ``paths`` overrides the upstream folder layout."""
        from .bigvgan import BigVGAN
        from .campplus import CAMPPlus
        from .gpt import UnifiedVoice
        from .gpt.emotion import EmotionMatrices
        from .s2mel import S2Mel
        from .semantic_codec import SemanticCodec
        from .text import TextFrontend
        from .w2vbert import SemanticEncoder

        if paths is None:
            if model_dir is None:
                raise EngineError("No model folder given.")
            model_dir = Path(model_dir)
            if not (model_dir / "config.yaml").is_file():
                raise EngineError(
                    f"No IndexTTS-2 models in {model_dir} (config.yaml is missing). "
                    "Run the model setup (python main.py models download) or choose the model folder in Settings."
                )
            bad = problems(check(model_dir))
            if bad:
                listing = "; ".join(describe(s).strip() for s in bad[:4])
                raise EngineError(f"Model files in {model_dir} are incomplete: {listing}. Run 'python main.py models download'.")
            try:
                paths = ModelPaths.from_model_dir(model_dir)
            except ConfigError as exc:
                raise EngineError(str(exc)) from exc

        dev = pick_device(device)
        steps = ["config", "text", "w2v-BERT", "semantic codec", "CAMPPlus", "GPT", "s2mel", "vocoder", "emotion matrices"]

        def step(i: int) -> None:
            if on_progress:
                on_progress(Progress(f"Loading {steps[i]}", i / len(steps)))

        try:
            step(0)
            cfg = load_config(paths.config)
            step(1)
            glossary = paths.config.parent / "glossary.yaml"
            self.frontend = TextFrontend(paths.bpe, glossary_path=glossary if glossary.is_file() else None)
            step(2)
            self.semantic = SemanticEncoder.from_files(paths.w2v_bert, paths.w2v_stats).to(dev) if paths.w2v_bert else None
            step(3)
            self.codec = SemanticCodec.from_file(paths.semantic_codec, cfg.require("semantic_codec")).to(dev).eval()
            step(4)
            self.campplus = CAMPPlus.from_checkpoint(paths.campplus).to(dev).eval()
            step(5)
            self.fp16 = bool(fp16 and dev.type == "cuda")
            self.gpt = UnifiedVoice.from_checkpoint(paths.gpt, cfg.require("gpt"), device=dev,
                                                    dtype=torch.float16 if self.fp16 else torch.float32,
                                                    semantic_dim=cfg.require("semantic_codec").hidden_size)
            step(6)
            self.s2mel = S2Mel.from_checkpoint(paths.s2mel, cfg.require("s2mel"), device=dev)
            step(7)
            self.vocoder = BigVGAN.from_pretrained(paths.bigvgan, device=dev).eval()
            step(8)
            self.emotions = EmotionMatrices.load(paths.feat1, paths.feat2, cfg.emo_num)
        except (CheckpointError, ConfigError) as exc:
            raise EngineError(str(exc)) from exc
        self.cfg, self.paths, self.device = cfg, paths, dev
        self._voices.clear()
        self._emotions.clear()
        self._fingerprint = self._model_fingerprint(paths)
        if on_progress:
            on_progress(Progress("Models ready", 1.0))
        log.info("engine ready on %s (fp16=%s)", dev, self.fp16)

    @staticmethod
    def _model_fingerprint(paths: ModelPaths) -> str:
        h = hashlib.sha256()
        for p in (paths.config, paths.gpt, paths.s2mel, paths.w2v_stats, paths.semantic_codec, paths.campplus):
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        if paths.w2v_bert:
            st = (Path(paths.w2v_bert) / "model.safetensors").stat()
            h.update(f"w2v:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise EngineError("The models are not loaded yet.")

    # ------------------------------------------------------------------------------------------- text

    def split_text(self, text: str, max_tokens: int = 120) -> list[str]:
        """How ``text`` will be split into segments (for previews)."""
        self._require_loaded()
        if not text.strip():
            return []
        segments = self.frontend.segments(text, max_tokens)
        return ["".join(s).replace("\u2581", " ").strip() for s in segments]

    # ------------------------------------------------------------------------------------------ voices

    def _semantic_features(self, wav16k: torch.Tensor) -> torch.Tensor:
        from .features import seamless_features

        if self.semantic is None:
            raise EngineError("w2v-BERT is not loaded; semantic features must be given.")
        feats, mask = seamless_features(wav16k)
        return self.semantic.embed(feats.to(self.device), mask.to(self.device))

    @torch.inference_mode()
    def prepare_voice(self, clip: str | Path, spk_cond_emb: torch.Tensor | None = None) -> Voice:
        """Speaker conditioning for ``clip`` (memory cache, then disk cache, then computed).

        ``spk_cond_emb`` supplies precomputed semantic features instead of running w2v-BERT (test seam).
        """
        from .audio import load_speaker_audio
        from .features import campplus_input, mel_spectrogram

        self._require_loaded()
        clip = Path(clip)
        key = self._clip_key(clip)
        given = spk_cond_emb is not None
        if not given:
            if key in self._voices:
                return self._voices[key]
            cached = self._load_cached_voice(key)
            if cached is not None:
                self._voices[key] = cached
                return cached
        audio = _read_clip(load_speaker_audio, clip, "voice")
        spec = self.cfg.s2mel.preprocess_params
        sp = spec.spect_params
        if spk_cond_emb is None:
            spk_cond_emb = self._semantic_features(audio.audio_16k)
        spk_cond_emb = spk_cond_emb.to(self.device).float()
        _, s_ref = self.codec.quantize(spk_cond_emb)
        ref_mel = mel_spectrogram(
            audio.audio_22k.to(self.device), n_fft=sp.n_fft, win=sp.win_length, hop=sp.hop_length, n_mels=sp.n_mels,
            sr=spec.sr, fmin=sp.fmin, fmax=sp.fmax,
        )
        style = self.campplus(campplus_input(audio.audio_16k).to(self.device))
        prompt_condition = self.s2mel.length_regulator(s_ref, torch.tensor([ref_mel.shape[-1]], device=self.device))
        spk_latent = self.gpt.get_conditioning(spk_cond_emb)
        voice = Voice(key, spk_cond_emb, style, ref_mel, prompt_condition, spk_latent)
        if not given:  # conditioning built on supplied features is not this clip's own: never cache it
            self._voices[key] = voice
            self._save_cached_voice(voice)
        return voice

    @torch.inference_mode()
    def emotion_features(self, clip: str | Path) -> torch.Tensor:
        """``emo_cond_emb`` of a clip: the 16 kHz load through w2v-BERT (cached by content)."""
        from .audio import load_emotion_audio

        self._require_loaded()
        key = self._clip_key(Path(clip), "emotion")
        if key not in self._emotions:
            cached = self._load_cached(key, "emo")
            if cached is not None:
                self._emotions[key] = cached["emo_cond_emb"].to(self.device)
            else:
                emb = self._semantic_features(_read_clip(load_emotion_audio, clip, "emotion").to(self.device))
                self._emotions[key] = emb
                self._save_cached(key, "emo", {"emo_cond_emb": emb})
        return self._emotions[key]

    def _clip_key(self, clip: Path, role: str = "voice") -> str:
        if not clip.is_file():
            raise EngineError(f"{role.capitalize()} clip not found: {clip}. Choose an existing audio file.")
        return file_digest(clip)[:32]

    def _cache_path(self, key: str, kind: str) -> Path | None:
        if self._cache_dir is None:
            return None
        return self._cache_dir / f"{kind}-{self._fingerprint}-{key}.safetensors"

    def _load_cached(self, key: str, kind: str) -> dict[str, torch.Tensor] | None:
        path = self._cache_path(key, kind)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            log.warning("ignoring unreadable voice cache %s", path)
            return None

    def _save_cached(self, key: str, kind: str, tensors: dict[str, torch.Tensor]) -> None:
        path = self._cache_path(key, kind)
        if path is None:
            return
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            tmp.replace(path)
        except OSError as exc:  # a cache is an optimisation: never fail a synthesis over it
            log.warning("could not write voice cache %s: %s", path, exc)

    def _load_cached_voice(self, key: str) -> Voice | None:
        t = self._load_cached(key, "voice")
        if t is None:
            return None
        t = {k: v.to(self.device) for k, v in t.items()}
        return Voice(key, t["spk_cond_emb"], t["style"], t["ref_mel"], t["prompt_condition"], t["spk_latent"])

    def _save_cached_voice(self, voice: Voice) -> None:
        self._save_cached(voice.key, "voice", voice.tensors())

    # --------------------------------------------------------------------------------------- synthesis

    def synthesize(self, text: str, voice: str | Path, emotion: Emotion | None = None,
                   settings: GenerationSettings | None = None, on_progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> SynthesisResult:
        job = self._job(text, voice, emotion, settings, on_progress, cancel)
        pieces = [seg.audio for seg in self._run(job)]
        if not any(p.size for p in pieces):
            raise EngineError("The model produced no speech for this text. Try again (sampling varies), "
                              "rephrase the text, or use another voice clip.")
        return self._finish(job, pieces)

    def synthesize_stream(self, text: str, voice: str | Path, emotion: Emotion | None = None,
                          settings: GenerationSettings | None = None, on_progress: ProgressCallback | None = None,
                          cancel: threading.Event | None = None) -> Iterator[SegmentAudio]:
        job = self._job(text, voice, emotion, settings, on_progress, cancel)
        yield from self._run(job)

    def synthesize_traced(
        self, text: str, voice: str | Path, emotion: Emotion | None = None, settings: GenerationSettings | None = None,
        *, spk_cond_emb: torch.Tensor | None = None, emo_cond_emb: torch.Tensor | None = None,
        noise: Callable[[int, int], torch.Tensor] | None = None,
    ) -> tuple[SynthesisResult, Voice, list[SegmentTrace], torch.Tensor]:
        """``synthesize`` with the stage seams tests and diagnostics need: precomputed semantic features instead
        of w2v-BERT, injected diffusion noise ``noise(segment, frames)``, and every segment's intermediates.
        Returns ``(result, voice, traces, emovec)``."""
        job = self._job(text, voice, emotion, settings, None, None, spk_cond_emb=spk_cond_emb, emo_cond_emb=emo_cond_emb)
        job.noise = noise
        job.trace = []
        pieces = [seg.audio for seg in self._run(job)]
        return self._finish(job, pieces), job.voice, job.trace, job.emovec

    def _finish(self, job: _Job, pieces: list[np.ndarray]) -> SynthesisResult:
        silence = np.zeros(int(SAMPLE_RATE * job.settings.interval_silence_ms / 1000.0), dtype=np.int16)
        joined: list[np.ndarray] = []
        for i, piece in enumerate(pieces):
            joined.append(piece)
            if i < len(pieces) - 1 and silence.size:
                joined.append(silence)
        audio = np.concatenate(joined) if joined else np.zeros(0, dtype=np.int16)
        texts = ["".join(s).replace("\u2581", " ").strip() for s in job.segments]
        return SynthesisResult(audio, SAMPLE_RATE, dict(job.timings), texts, list(job.warnings))

    def _job(self, text: str, voice: str | Path, emotion: Emotion | None, settings: GenerationSettings | None,
             on_progress: ProgressCallback | None, cancel: threading.Event | None, *,
             spk_cond_emb: torch.Tensor | None = None, emo_cond_emb: torch.Tensor | None = None) -> _Job:
        self._require_loaded()
        settings = settings or GenerationSettings()
        settings.validate()
        emotion = emotion or Emotion()
        emotion.validate()
        if not isinstance(text, str) or not text.strip():
            raise EngineError("The text is empty. Type something to say.")
        if not voice:
            raise EngineError("No voice chosen. Pick or record a voice clip first.")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()

        def report(stage: str, fraction: float) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if on_progress:
                on_progress(Progress(stage, fraction))

        report("Preparing voice", 0.0)
        v = self.prepare_voice(voice, spk_cond_emb=spk_cond_emb)
        timings["voice"] = time.perf_counter() - t0

        # Emotion, as infer_v2: a vector (given or from text) replaces the emotion clip; without an
        # external emotion clip the speaker clip is the emotion reference and alpha is 1.
        weights: list[float] | None = None
        alpha = emotion.alpha
        emo_clip: str | Path | None = emotion.audio if emotion.mode == "audio" else None
        if emotion.mode == "text":
            report("Reading emotion from text", 0.02)
            weights = validate_emotion_vector(self._emotion_from_text(emotion.text or text))
        elif emotion.mode == "vector":
            weights = validate_emotion_vector(emotion.vector)
        if weights is not None:
            scale = max(0.0, min(1.0, alpha))
            if scale != 1.0:
                weights = [int(x * scale * 10000) / 10000 for x in weights]
            emo_clip = None
        if emo_clip is None:
            alpha = 1.0
        t1 = time.perf_counter()
        report("Preparing emotion", 0.04)
        if emo_cond_emb is None:
            emo_cond_emb = self.emotion_features(emo_clip if emo_clip is not None else voice)
        timings["emotion"] = time.perf_counter() - t1

        tokens = self.frontend.tokenize(text)
        segments = self.frontend.split_segments(tokens, settings.max_text_tokens_per_segment)
        if not segments:
            raise EngineError("Nothing to say: the text has no speakable characters.")
        return _Job(text, v, emo_cond_emb.to(self.device), alpha, weights, emotion.random, settings, segments,
                    on_progress, cancel, timings=timings)

    def _emotion_from_text(self, description: str) -> list[float]:
        from .qwen_emotion import QwenEmotion

        if self.qwen is None:
            qdir = self.paths.qwen if self.paths else None
            if qdir is None:
                raise EngineError("Emotion from text needs the QwenEmotion model (qwen0.6bemo4-merge), which is not "
                                  "installed. Run 'python main.py models download' or choose another emotion mode.")
            try:
                self.qwen = QwenEmotion.from_pretrained(qdir, device=self.device)
            except CheckpointError as exc:
                raise EngineError(str(exc)) from exc
        return self.qwen.vector(description)

    @torch.inference_mode()
    def _emovec(self, job: _Job) -> torch.Tensor:
        from .gpt.emotion import blend_emovec

        v = job.voice
        emovec = self.gpt.merge_emovec(v.spk_cond_emb, job.emo_cond_emb, job.alpha)
        if job.weights is not None:
            generator = None
            if job.use_random:
                generator = torch.Generator()
                generator.manual_seed(job.settings.seed if job.settings.seed is not None else random.randrange(2**63))
            emovec_mat, weight_sum = self.emotions.mix(job.weights, v.style.cpu(), use_random=job.use_random,
                                                       generator=generator)
            emovec = blend_emovec(emovec_mat.to(self.device), weight_sum, emovec)
        return emovec

    @torch.inference_mode()
    def _run(self, job: _Job) -> Iterator[SegmentAudio]:
        with self._lock:
            yield from self._run_locked(job)

    def _run_locked(self, job: _Job) -> Iterator[SegmentAudio]:
        s = job.settings
        n = len(job.segments)
        timings = job.timings
        for key in ("gpt", "gpt_latent", "s2mel", "vocoder"):
            timings.setdefault(key, 0.0)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        emovec = job.emovec = self._emovec(job)
        v = job.voice
        start = time.perf_counter()

        def progress(stage: str, seg: int, within: float) -> None:
            if job.cancel is not None and job.cancel.is_set():
                raise Cancelled()
            if job.on_progress:
                frac = 0.05 + 0.95 * (seg + within) / n
                job.on_progress(Progress(stage, min(frac, 1.0), seg + 1, n))

        for i, pieces in enumerate(job.segments):
            ids = self.frontend.convert_tokens_to_ids(pieces)
            progress("Generating speech codes", i, 0.0)
            t = time.perf_counter()
            codes, hit_max = self.gpt.generate(ids, v.spk_latent, emovec, s, cancel=job.cancel)
            timings["gpt"] += time.perf_counter() - t
            if hit_max:
                msg = (f"Segment {i + 1} reached the limit of {s.max_mel_tokens} speech tokens and may be cut off; "
                       "lower 'tokens per segment' or raise 'max mel tokens'.")
                log.warning(msg)
                if msg not in job.warnings:
                    job.warnings.append(msg)
            if codes.numel() == 0:
                job.warnings.append(f"Segment {i + 1} produced no speech.")
                continue
            t = time.perf_counter()
            latent = self.gpt.latent(ids, v.spk_latent, emovec, codes)
            timings["gpt_latent"] += time.perf_counter() - t
            progress("Rendering spectrogram", i, 0.5)
            t = time.perf_counter()
            mel = self._mel(job, i, codes, latent, progress)
            timings["s2mel"] += time.perf_counter() - t
            progress("Vocoding", i, 0.95)
            t = time.perf_counter()
            wav = self.vocoder(mel.float()).reshape(1, -1)
            timings["vocoder"] += time.perf_counter() - t
            pcm = torch.clamp(32767 * wav, -32767.0, 32767.0).cpu()
            if job.trace is not None:
                job.trace.append(SegmentTrace(ids, codes.cpu(), hit_max, latent.float().cpu(), mel.cpu(), pcm))
            audio = pcm.to(torch.int16).numpy().reshape(-1)
            if i == 0:
                timings["first_segment"] = time.perf_counter() - start + timings.get("voice", 0.0) + timings.get("emotion", 0.0)
            yield SegmentAudio(i, n, audio, "".join(pieces).replace("\u2581", " ").strip())
        timings["total"] = sum(timings.get(k, 0.0) for k in ("voice", "emotion", "gpt", "gpt_latent", "s2mel", "vocoder"))
        if job.on_progress:
            job.on_progress(Progress("Done", 1.0, n, n))

    def _mel(self, job: _Job, index: int, codes: torch.Tensor, latent: torch.Tensor,
             progress: Callable[[str, int, float], None]) -> torch.Tensor:
        v = job.voice
        s = job.settings
        latent = self.s2mel.gpt_layer(latent.float())
        s_infer = self.codec.vq2emb(codes.reshape(1, -1).to(self.device)).transpose(1, 2) + latent
        code_lens = torch.tensor([codes.numel()], dtype=torch.long, device=self.device)
        target = (code_lens * FRAMES_PER_CODE).long()  # float32 product, as upstream
        cond = self.s2mel.length_regulator(s_infer, target)
        mu = torch.cat([v.prompt_condition, cond], dim=1)
        frames = mu.shape[1]
        noise = job.noise(index, frames) if job.noise is not None else None

        def on_step(k: int, total: int) -> None:
            progress("Rendering spectrogram", index, 0.5 + 0.45 * k / max(total, 1))

        mel = self.s2mel.cfm.inference(
            mu, torch.tensor([frames], device=self.device), v.ref_mel, v.style, steps=s.diffusion_steps,
            cfg_rate=s.cfg_rate, noise=noise, cancel=job.cancel, on_step=on_step, fast=s.fast,
        )
        return mel[:, :, v.ref_mel.shape[-1]:]
