"""Every model stage of IndexTTS-2 in one object, built by one function.

:func:`build_pipeline` returns a complete :class:`Pipeline` or raises :class:`~core.api.EngineError`; the engine
swaps a new pipeline in with one assignment, so a load that fails half way leaves the previous one working.
Everything derived from the models (the voice cache, the lazily loaded QwenEmotion model) belongs to the
pipeline and goes with it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .api import EngineError, ModelLimits, Progress, ProgressCallback
from .checkpoints import CheckpointError, prefault
from .config import ConfigError, IndexTTSConfig, load_config
from .device import DeviceChoice
from .models import ModelPaths, check, describe, problems
from .voice_cache import VoiceCache

if TYPE_CHECKING:
    from .bigvgan import BigVGAN
    from .campplus import CAMPPlus
    from .gpt.emotion import EmotionMatrices
    from .gpt.model import UnifiedVoice
    from .qwen_emotion import QwenEmotion
    from .s2mel import S2Mel
    from .semantic_codec import SemanticCodec
    from .text import TextFrontend
    from .w2vbert import SemanticEncoder

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Pipeline:
    """The loaded stages (attribute names as the engine uses them) and what belongs to them."""

    cfg: IndexTTSConfig
    frontend: TextFrontend
    semantic: SemanticEncoder | None  # None only in tests that supply semantic features
    codec: SemanticCodec
    campplus: CAMPPlus
    gpt: UnifiedVoice
    s2mel: S2Mel
    vocoder: BigVGAN
    emotions: EmotionMatrices
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    fp16: bool = False
    paths: ModelPaths | None = None
    fingerprint: str = "unsaved"
    qwen: QwenEmotion | None = None  # loaded on first use (emotion from text)
    voices: VoiceCache | None = None  # set by the engine that adopts the pipeline
    version: str = "2.0"  # the IndexTTS version (core.pipeline_v25.V25Pipeline is "2.5")

    @property
    def limits(self) -> ModelLimits:
        return self.cfg.limits()

    def qwen_model(self) -> QwenEmotion:
        """The QwenEmotion model of this pipeline's model folder (loaded on first use)."""
        if self.qwen is None:
            self.qwen = load_qwen(self.paths.qwen if self.paths else None, self.device)
        return self.qwen


def load_qwen(qdir: Path | None, device: torch.device) -> QwenEmotion:
    """The QwenEmotion model in ``qdir`` (emotion from text), or an EngineError saying how to install it."""
    from .qwen_emotion import QwenEmotion

    if qdir is None:
        raise EngineError("Emotion from text needs the QwenEmotion model (qwen0.6bemo4-merge), which is not "
                          "installed. Run 'python main.py models download' or choose another emotion mode.")
    try:
        return QwenEmotion.from_pretrained(qdir, device=device)
    except (CheckpointError, ConfigError, OSError) as exc:
        raise EngineError(f"The QwenEmotion model in {qdir} cannot be loaded: {exc}") from exc


def content_condition(p: Pipeline, codes: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """s2mel's content input for codes [n] and their GPT latent [1, n, D]: ``vq2emb(codes)^T + gpt_layer(latent)``
    [1, n, C] (infer_v2's ``S_infer``)."""
    latent = p.s2mel.gpt_layer(latent.float())
    return p.codec.vq2emb(codes.reshape(1, -1).to(p.device)).transpose(1, 2) + latent


def resolve_paths(model_dir: str | Path | None) -> ModelPaths:
    """The files of a model folder in the upstream layout, or an EngineError saying what is missing."""
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
        raise EngineError(f"Model files in {model_dir} are incomplete: {listing}. "
                          "Run 'python main.py models download'.")
    try:
        return ModelPaths.from_model_dir(model_dir)
    except ConfigError as exc:
        raise EngineError(str(exc)) from exc


def model_fingerprint(paths: ModelPaths) -> str:
    """Identifies the model files (path, size, mtime): cached voices are valid only for the same fingerprint."""
    files = (paths.config, paths.gpt, paths.s2mel, paths.w2v_stats, paths.semantic_codec, paths.campplus)
    return files_fingerprint(files, paths.w2v_bert)


def files_fingerprint(files: Iterable[Path], w2v_bert: Path | None) -> str:
    """``files`` (path, size, mtime) and the w2v-BERT weights (size, mtime) in 16 hex digits."""
    h = hashlib.sha256()
    for p in files:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    if w2v_bert:
        st = (Path(w2v_bert) / "model.safetensors").stat()
        h.update(f"w2v:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_pipeline(paths: ModelPaths, choice: DeviceChoice, on_progress: ProgressCallback | None = None) -> Pipeline:
    """Build every stage from the official files on ``choice.device``; a complete pipeline or an EngineError."""
    from .bigvgan import BigVGAN
    from .campplus import CAMPPlus
    from .gpt.emotion import EmotionMatrices
    from .gpt.model import UnifiedVoice
    from .s2mel import S2Mel
    from .semantic_codec import SemanticCodec
    from .text import TextFrontend
    from .text.normalizer import GlossaryError
    from .w2vbert import SemanticEncoder

    dev = torch.device(choice.device)
    fp16 = bool(choice.fp16 and dev.type == "cuda")
    steps = ["config", "text", "w2v-BERT", "semantic codec", "CAMPPlus", "GPT", "s2mel", "vocoder", "emotion matrices",
             "weights into memory"]

    def step(i: int) -> None:
        if on_progress:
            on_progress(Progress(f"Loading {steps[i]}", i / len(steps)))

    try:
        step(0)
        cfg = load_config(paths.config)
        step(1)
        glossary = paths.config.parent / "glossary.yaml"
        frontend = TextFrontend(paths.bpe, glossary_path=glossary if glossary.is_file() else None)
        step(2)
        semantic = SemanticEncoder.from_files(paths.w2v_bert, paths.w2v_stats).to(dev) if paths.w2v_bert else None
        step(3)
        codec = SemanticCodec.from_file(paths.semantic_codec, cfg.require("semantic_codec")).to(dev).eval()
        step(4)
        campplus = CAMPPlus.from_checkpoint(paths.campplus).to(dev).eval()
        step(5)
        gpt = UnifiedVoice.from_checkpoint(paths.gpt, cfg.require("gpt"), device=dev,
                                           dtype=torch.float16 if fp16 else torch.float32,
                                           semantic_dim=cfg.require("semantic_codec").hidden_size)
        step(6)
        s2mel = S2Mel.from_checkpoint(paths.s2mel, cfg.require("s2mel"), device=dev)
        step(7)
        vocoder = BigVGAN.from_pretrained(paths.bigvgan, device=dev).eval()
        step(8)
        emotions = EmotionMatrices.load(paths.feat1, paths.feat2, cfg.emo_num)
        step(9)
        # The checkpoints are memory-mapped (core.checkpoints): bring in now, in a few calls, the weights every
        # synthesis reads. The voice stages (w2v-BERT, codec, CAMPPlus) stay on disk until a new voice is embedded.
        prefault(t for stage in (gpt, s2mel, vocoder) for t in (*stage.parameters(), *stage.buffers()))
    except (CheckpointError, ConfigError, GlossaryError) as exc:
        raise EngineError(str(exc)) from exc
    except torch.cuda.OutOfMemoryError as exc:
        raise EngineError(f"The GPU ran out of memory while loading the models ({choice.device}). Close other GPU "
                          "programs, or choose the CPU in Settings.") from exc
    return Pipeline(cfg, frontend, semantic, codec, campplus, gpt, s2mel, vocoder, emotions, device=dev, fp16=fp16,
                    paths=paths, fingerprint=model_fingerprint(paths))
