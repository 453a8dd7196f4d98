"""IndexTTS-2.5 next to 2.0: which version a model folder holds, its files, its loaded stages, and the two
computations that differ from 2.0 around the shared GPT decode (the speaker conditioning and a segment's mel).

A 2.5 folder is told by its files (``codec.pth`` and the ``.tiktoken`` vocabulary), never by ``config.yaml``'s
``version`` (the first 2.5 upload shipped a wrong one). :class:`V25Pipeline` uses the attribute names of
:class:`core.pipeline.Pipeline` where a stage has the same role (``gpt``, ``emotions``, ``campplus``, ``vocoder``,
``semantic``...), so version-independent engine code (emotion vectors, decoding) runs on either.

Per segment (``infer_v2_5``): GPT codes (``generate(..., lang=...)``, speaker latent :func:`speaker_latent`) ->
:func:`segment_mel` (codec decode, duration-factor length, CFM) -> vocoder. There is no second GPT pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from core.api import EngineError, ModelLimits
from core.audio import SpeakerAudio
from core.bigvgan import BigVGAN
from core.campplus import CAMPPlus
from core.checkpoints import CheckpointError
from core.codec_v25 import EnhancedCodec, EnhancedCodecConfig
from core.config import ConfigError, IndexTTSConfig, load_config
from core.features import campplus_input, mel_spectrogram, seamless_features
from core.gpt.emotion import EmotionMatrices
from core.gpt.model import UnifiedVoice
from core.s2mel.v25 import S2MelV25
from core.text import TextError
from core.text.fst import GrammarError
from core.text.tokenizer import TokenizerError
from core.text.v25 import V25TextFrontend
from core.text.v25_vocab import VOCAB_FILE
from core.w2vbert import SemanticEncoder

if TYPE_CHECKING:
    from core.qwen_emotion import QwenEmotion
    from core.voice_cache import VoiceCache

CODEC_FILE = "codec.pth"


def detect_version(model_dir: str | Path) -> str:
    """``"2.5"`` when the folder holds the 2.5 codec and vocabulary, else ``"2.0"``."""
    folder = Path(model_dir)
    return "2.5" if (folder / CODEC_FILE).is_file() and (folder / VOCAB_FILE).is_file() else "2.0"


@dataclass(frozen=True)
class V25Paths:
    config: Path
    gpt: Path
    codec: Path
    s2mel: Path
    vocab: Path
    w2v_stats: Path
    feat1: Path
    feat2: Path
    w2v_bert: Path | None  # HF dir; None when features are given (tests)
    campplus: Path
    bigvgan: Path  # dir with config.json + bigvgan_generator.pt
    glossary: Path | None = None
    qwen: Path | None = None  # QwenEmotion (emotion from text): the folder's, else the 2.0 folder's it sits in

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> V25Paths:
        """The upstream layout: the 2.5 files in the folder, the shared helper models in the folder, else in the
        2.0 folder it sits in (core.models.version_dir), else the HF cache."""
        from core.models import V25_SHARED, shared_file

        folder = Path(model_dir)
        cfg = load_config(folder / "config.yaml")
        shared = {m.local: shared_file(folder, m) for m in V25_SHARED}
        qwen_name = cfg.qwen_emo_path.strip().rstrip("/")
        qwen = next((d / qwen_name for d in (folder, folder.parent) if (d / qwen_name / "config.json").is_file()), None)
        glossary = folder / "glossary.yaml"
        return cls(
            config=cfg.path, gpt=folder / cfg.gpt_checkpoint, codec=folder / CODEC_FILE,
            s2mel=folder / cfg.s2mel_checkpoint, vocab=folder / VOCAB_FILE, w2v_stats=folder / cfg.w2v_stat,
            feat1=folder / cfg.spk_matrix, feat2=folder / cfg.emo_matrix,
            w2v_bert=shared["hf_cache/w2v-bert-2.0/model.safetensors"].parent,
            campplus=shared["hf_cache/campplus_cn_common.bin"],
            bigvgan=shared["hf_cache/bigvgan/bigvgan_generator.pt"].parent,
            glossary=glossary if glossary.is_file() else None, qwen=qwen,
        )

    def fingerprint(self) -> str:
        from core.pipeline import files_fingerprint

        return "v25-" + files_fingerprint((self.config, self.gpt, self.codec, self.s2mel, self.vocab, self.w2v_stats,
                                           self.campplus), self.w2v_bert)


def resolve_v25_paths(model_dir: str | Path) -> V25Paths:
    """The files of an IndexTTS-2.5 folder, or an EngineError naming the first missing one and the fix."""
    from core.models import V25_MANIFEST

    folder = Path(model_dir)
    fix = "Run 'python main.py models download --model 2.5' or choose the IndexTTS-2.5 folder."
    for item in V25_MANIFEST:
        if not (folder / item.local).is_file():
            raise EngineError(f"The IndexTTS-2.5 model folder {folder} has no {item.local} ({item.what}). {fix}")
    try:
        paths = V25Paths.from_model_dir(folder)
    except ConfigError as exc:
        raise EngineError(str(exc)) from exc
    helpers = {"w2v-BERT 2.0 weights": (paths.w2v_bert or folder) / "model.safetensors",
               "CAMPPlus speaker encoder": paths.campplus, "BigVGAN vocoder": paths.bigvgan / "bigvgan_generator.pt"}
    for what, path in helpers.items():
        if not path.is_file():
            raise EngineError(f"IndexTTS-2.5 needs the {what} ({path.name}), found neither in {folder} nor in the "
                              f"IndexTTS-2 folder it sits in. {fix}")
    return paths


@dataclass
class V25Pipeline:
    """The loaded 2.5 stages."""

    cfg: IndexTTSConfig
    frontend: V25TextFrontend
    semantic: SemanticEncoder | None  # None only when semantic features are given
    codec: EnhancedCodec
    campplus: CAMPPlus
    gpt: UnifiedVoice
    s2mel: S2MelV25
    vocoder: BigVGAN
    emotions: EmotionMatrices
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    version: str = "2.5"
    fp16: bool = False  # 2.5 runs in float32 (settings.fast still speeds up the diffusion)
    paths: V25Paths | None = None
    fingerprint: str = "v25-unsaved"
    qwen: QwenEmotion | None = None  # loaded on first use (emotion from text)
    voices: VoiceCache | None = None  # set by the engine that adopts the pipeline

    @property
    def limits(self) -> ModelLimits:
        return self.cfg.limits().as_v25()

    def qwen_model(self) -> QwenEmotion:
        """The QwenEmotion model next to the 2.5 files (loaded on first use)."""
        if self.qwen is None:
            from core.pipeline import load_qwen

            self.qwen = load_qwen(self.paths.qwen if self.paths else None, self.device)
        return self.qwen

    @classmethod
    def load(cls, paths: V25Paths, device: str | torch.device = "cpu") -> V25Pipeline:
        """Every stage from the files (float32), or an EngineError naming the file and the fix."""
        dev = torch.device(device)
        try:
            cfg = load_config(paths.config)
            text = V25TextFrontend(paths.vocab, glossary=paths.glossary,
                                   positions=cfg.require("gpt").max_text_tokens + 2)
            semantic = SemanticEncoder.from_files(paths.w2v_bert, paths.w2v_stats).to(dev) if paths.w2v_bert else None
            codec_cfg = EnhancedCodecConfig(**vars(cfg.require("semantic_codec")))
            codec = EnhancedCodec.from_file(paths.codec, codec_cfg).to(dev)
            campplus = CAMPPlus.from_checkpoint(paths.campplus).to(dev).eval()
            gpt = UnifiedVoice.from_checkpoint(paths.gpt, cfg.require("gpt"), device=dev, campplus=True,
                                               semantic_dim=codec_cfg.hidden_size)
            s2mel = S2MelV25.from_checkpoint(paths.s2mel, cfg.require("s2mel"), device=dev)
            vocoder = BigVGAN.from_pretrained(paths.bigvgan, device=dev).eval()
            emotions = EmotionMatrices.load(paths.feat1, paths.feat2, cfg.emo_num)
        except (CheckpointError, ConfigError, ValueError, TextError, GrammarError, TokenizerError) as exc:
            raise EngineError(str(exc)) from exc
        except torch.cuda.OutOfMemoryError as exc:
            raise EngineError(f"The GPU ran out of memory while loading IndexTTS-2.5 ({dev}). Close other GPU "
                              "programs, or choose the CPU in Settings.") from exc
        return cls(cfg, text, semantic, codec, campplus, gpt, s2mel, vocoder, emotions, device=dev, paths=paths,
                   fingerprint=paths.fingerprint())


@dataclass(frozen=True)
class V25Conditioning:
    """What a 2.5 voice contributes: ``spk_latent`` = spk_emb_proj(style) for the GPT, ``prompt_condition`` (the
    speaker's continuous w2v features regulated to its mel frames), ``ref_mel`` and ``style`` for the CFM."""

    spk_cond_emb: Tensor
    style: Tensor
    ref_mel: Tensor
    prompt_condition: Tensor
    spk_latent: Tensor


@torch.inference_mode()
def semantic_features(p: V25Pipeline, wav16k: Tensor) -> Tensor:
    """Normalised w2v-BERT features [1, T, 1024] of a 16 kHz clip (speaker or emotion)."""
    if p.semantic is None:
        raise EngineError("w2v-BERT is not loaded; semantic features must be given.")
    feats, mask = seamless_features(wav16k)
    return p.semantic.embed(feats.to(p.device), mask.to(p.device))


@torch.inference_mode()
def mel_and_style(p: V25Pipeline, audio: SpeakerAudio) -> tuple[Tensor, Tensor]:
    """The clip's s2mel mel [1, 80, T_ref] (22.05 kHz audio) and CAMPPlus style [1, 192] (16 kHz audio)."""
    spec = p.cfg.require("s2mel").preprocess_params
    sp = spec.spect_params
    ref_mel = mel_spectrogram(audio.audio_22k.to(p.device), n_fft=sp.n_fft, win=sp.win_length, hop=sp.hop_length,
                              n_mels=sp.n_mels, sr=spec.sr, fmin=sp.fmin, fmax=sp.fmax)
    return ref_mel, p.campplus(campplus_input(audio.audio_16k).to(p.device))


@torch.inference_mode()
def speaker_conditioning(p: V25Pipeline, spk_cond_emb: Tensor, style: Tensor, ref_mel: Tensor) -> V25Conditioning:
    """From the clip's normalised w2v features [1, T, 1024], CAMPPlus style [1, 192] and s2mel mel [1, 80, T_ref]."""
    spk_cond_emb = spk_cond_emb.to(p.device).float()
    prompt = p.s2mel.prompt_condition(spk_cond_emb, ref_mel.shape[-1])
    return V25Conditioning(spk_cond_emb, style, ref_mel, prompt, p.gpt.campplus_latent(style))


@torch.inference_mode()
def segment_mel(
    p: V25Pipeline, voice: V25Conditioning, codes: Tensor, duration_factor: float = 1.0, steps: int = 25,
    cfg_rate: float = 0.7, noise: Tensor | None = None, generator: torch.Generator | None = None,
    cancel: threading.Event | None = None, on_step: Callable[[int, int], None] | None = None, fast: bool = False,
) -> Tensor:
    """Codes [n] (stop code removed) -> the segment's mel [1, 80, int(2n * 1.72 * duration_factor)]."""
    s_infer = p.codec.decode(codes.reshape(1, -1).to(p.device))
    cond = p.s2mel.target_condition(s_infer, duration_factor)
    return p.s2mel.mel(voice.prompt_condition, cond, voice.ref_mel, voice.style, steps=steps, cfg_rate=cfg_rate,
                       noise=noise, generator=generator, cancel=cancel, on_step=on_step, fast=fast)
