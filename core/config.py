"""IndexTTS-2 ``config.yaml`` as typed dataclasses.

Unknown keys are tolerated (ignored); a missing required key is a :class:`ConfigError` naming the key
and the file. Sections a stage does not need may be absent (e.g. the tiny GPT-only test config).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .api import ModelLimits

T = TypeVar("T")


class ConfigError(ValueError):
    """config.yaml is missing, unreadable or lacks a required key."""


@dataclass
class ConditionModuleConfig:
    output_size: int
    linear_units: int
    attention_heads: int
    num_blocks: int
    input_layer: str = "conv2d2"
    perceiver_mult: float = 2  # the tiny 2.5 goldens use 0.1


@dataclass
class GPTConfig:
    model_dim: int
    layers: int
    heads: int
    max_mel_tokens: int
    max_text_tokens: int
    number_text_tokens: int
    number_mel_codes: int
    start_mel_token: int
    stop_mel_token: int
    start_text_token: int
    stop_text_token: int
    condition_module: ConditionModuleConfig
    emo_condition_module: ConditionModuleConfig
    use_mel_codes_as_input: bool = True
    mel_length_compression: int = 1024
    train_solo_embeddings: bool = False
    condition_type: str = "conformer_perceiver"
    condition_num_latent: int = 32


@dataclass
class SemanticCodecConfig:
    codebook_size: int
    hidden_size: int
    codebook_dim: int
    vocos_dim: int
    vocos_intermediate_dim: int
    vocos_num_layers: int


@dataclass
class SpectParams:
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None


@dataclass
class PreprocessParams:
    sr: int
    spect_params: SpectParams


@dataclass
class LengthRegulatorConfig:
    channels: int
    in_channels: int
    is_discrete: bool = False
    content_codebook_size: int = 2048
    sampling_ratios: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    vector_quantize: bool = False
    n_codebooks: int = 1
    quantizer_dropout: float = 0.0
    f0_condition: bool = False
    n_f0_bins: int = 512


@dataclass
class DiTConfig:
    hidden_dim: int
    num_heads: int
    depth: int
    in_channels: int
    content_dim: int
    block_size: int = 8192
    class_dropout_prob: float = 0.1
    style_condition: bool = True
    final_layer_type: str = "wavenet"
    target: str = "mel"
    content_codebook_size: int = 1024
    content_type: str = "discrete"
    f0_condition: bool = False
    n_f0_bins: int = 512
    content_codebooks: int = 1
    is_causal: bool = False
    long_skip_connection: bool = True
    zero_prompt_speech_token: bool = False
    time_as_token: bool = False
    style_as_token: bool = False
    uvit_skip_connection: bool = True
    add_resblock_in_transformer: bool = False


@dataclass
class WaveNetConfig:
    hidden_dim: int
    num_layers: int
    kernel_size: int
    dilation_rate: int = 1
    p_dropout: float = 0.0
    style_condition: bool = True


@dataclass
class StyleEncoderConfig:
    dim: int = 192


@dataclass
class S2MelConfig:
    preprocess_params: PreprocessParams
    length_regulator: LengthRegulatorConfig
    DiT: DiTConfig
    wavenet: WaveNetConfig
    style_encoder: StyleEncoderConfig = field(default_factory=StyleEncoderConfig)
    dit_type: str = "DiT"
    reg_loss_type: str = "l1"


@dataclass
class VocoderConfig:
    type: str = "bigvgan"
    name: str = "nvidia/bigvgan_v2_22khz_80band_256x"


@dataclass
class IndexTTSConfig:
    """The whole ``checkpoints/config.yaml``. Sections are optional so partial (test) configs load."""

    path: Path = Path("config.yaml")
    gpt: GPTConfig | None = None
    semantic_codec: SemanticCodecConfig | None = None
    s2mel: S2MelConfig | None = None
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    bpe_model: str = "bpe.model"
    gpt_checkpoint: str = "gpt.pth"
    s2mel_checkpoint: str = "s2mel.pth"
    w2v_stat: str = "wav2vec2bert_stats.pt"
    emo_matrix: str = "feat2.pt"
    spk_matrix: str = "feat1.pt"
    emo_num: list[int] = field(default_factory=lambda: [3, 17, 2, 8, 4, 5, 10, 24])
    qwen_emo_path: str = "qwen0.6bemo4-merge/"
    version: str = "2.0"

    @property
    def model_dir(self) -> Path:
        return self.path.parent

    def require(self, section: str) -> Any:
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"{self.path}: required section '{section}' is missing")
        return value

    def limits(self) -> ModelLimits:
        """What this model can take per segment (speech tokens, text tokens)."""
        gpt = self.require("gpt")
        return ModelLimits(max_mel_tokens=int(gpt.max_mel_tokens), max_text_tokens=int(gpt.max_text_tokens))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any, where: str, path: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip() in ("None", "null")):
            return None
        return _convert(args[0], value, where, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{where}' must be a mapping, found {type(value).__name__}")
        return build(typing.cast(type, tp), value, path, where)  # a type hint: the class, never an instance
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: '{where}' must be a list, found {value!r}")
        return [_convert(inner, v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if tp is str:
            return str(value).strip()
        if tp in (int, float):
            if isinstance(value, bool):
                raise TypeError
            converted = tp(value)
            if tp is int and converted != value:
                raise TypeError
            return converted
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: '{where}' must be {tp.__name__}, found {value!r}") from None
    return value


def build(cls: type[T], data: dict[str, Any], path: Path, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys ignored, missing required keys reported."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "path":
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ConfigError(f"{path}: required key '{where}' is missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], where, path)
    return cls(**kwargs)


def load_config(path: str | Path) -> IndexTTSConfig:
    """Read ``config.yaml``. Raises :class:`ConfigError` with the file and key on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    flat = dict(data)
    dataset = data.get("dataset") or {}
    if isinstance(dataset, dict) and "bpe_model" in dataset:
        flat["bpe_model"] = dataset["bpe_model"]
    if "version" in flat:
        flat["version"] = str(flat["version"])
    cfg = build(IndexTTSConfig, flat, path)
    cfg.path = path
    return cfg
