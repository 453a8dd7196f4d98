"""Emotion from text: IndexTTS-2's QwenEmotion (a fine-tuned Qwen3-0.6B in ``checkpoints/qwen0.6bemo4-merge/``).

Three parts, none of them needing ``transformers``:

* :class:`Qwen3ForCausalLM`, our own Qwen3 forward (RMSNorm, per-head q/k RMSNorm before RoPE, grouped-query
  attention, SiLU-gated MLP, tied embeddings when the config says so) with greedy decoding over a KV cache. Attribute
  names follow the HF checkpoint keys, so ``model.safetensors`` loads strictly as is.
* :class:`QwenTokenizer`, the model folder's ``tokenizer.json`` through the ``tokenizers`` library, and its chat
  template (``chat_template.jinja`` or ``tokenizer_config.json``) rendered with jinja2 the way HF renders it.
* :func:`parse_emotion_output`, upstream's parsing of the model's answer (``indextts/infer_v2.py``
  ``QwenEmotion.inference``/``convert``): JSON with Chinese keys, or a regex fallback; label aliases; the
  melancholic/sad swap; clamping to [0, 1.2]; calm when nothing was detected.

Decoding is greedy. Upstream calls ``generate`` with the fine-tune's ``generation_config.json`` (not published with
enough detail to know whether it samples); greedy gives the model's most likely answer and is reproducible.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoints import CheckpointError, load_json, load_safetensors, load_state, load_strict

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "文本情感分类"
EMOTION_KEYS_CN: tuple[str, ...] = ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
EMOTION_KEYS_EN: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
CN_TO_EN: dict[str, str] = dict(zip(EMOTION_KEYS_CN, EMOTION_KEYS_EN))
LABEL_ALIASES: tuple[str, ...] = ("emotion", "emotion_label", "label", "情感", "情绪")
# The model cannot tell 悲伤 (sad) from 低落 (melancholic); these words in the input swap the two scores (upstream).
MELANCHOLIC_WORDS: tuple[str, ...] = ("低落", "melancholy", "melancholic", "depression", "depressed", "gloomy")
MIN_SCORE, MAX_SCORE = 0.0, 1.2
THINK_END_ID = 151668  # "</think>" in the Qwen3 vocabulary (looked up in tokenizer.json when available)
DEFAULT_MAX_NEW_TOKENS = 2048  # upstream: 32768; an emotion answer is ~60 tokens
_REGEX_FALLBACK = re.compile(r'([^\s":.,]+?)"?\s*:\s*([\d.]+)')


# ============================================================================================== parsing (upstream)


def strip_thinking(ids: Sequence[int], think_end_id: int = THINK_END_ID) -> list[int]:
    """The generated ids after the LAST ``</think>`` (all of them when there is none)."""
    ids = list(ids)
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == think_end_id:
            return ids[i + 1 :]
    return ids


def _label_to_key(value: Any) -> str | None:
    """A Chinese emotion key for a label string (the key itself or, case-insensitively, its English name)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value in CN_TO_EN:
        return value
    lower = value.lower()
    for cn, en in CN_TO_EN.items():
        if lower == en:
            return cn
    return None


def _normalize_labels(content: Any) -> dict[Any, Any]:
    """Turn label answers (a bare label, an alias field, or a score key holding a label) into 1.0 scores."""
    normalized = dict(content) if isinstance(content, dict) else {}
    detected = _label_to_key(content) if isinstance(content, str) else None
    if detected is None:
        for alias in LABEL_ALIASES:
            detected = _label_to_key(normalized.get(alias))
            if detected is not None:
                break
    if detected is not None and all(key not in normalized for key in EMOTION_KEYS_CN):
        normalized[detected] = 1.0
    for key in EMOTION_KEYS_CN:
        named = _label_to_key(normalized.get(key))
        if named is not None:
            normalized[key] = 1.0 if named == key else 0.0
            if named != key:
                normalized[named] = 1.0
    return normalized


def _clamp_score(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"QwenEmotion returned a non-numeric emotion score {value!r}. Please retry the request."
        ) from exc
    return max(MIN_SCORE, min(MAX_SCORE, value))  # this order maps NaN to MAX_SCORE, as upstream


def convert_scores(content: Any) -> dict[str, float]:
    """Upstream ``convert``: 8 clamped scores with English names in upstream order; calm = 1 when all are <= 0."""
    normalized = _normalize_labels(content)
    scores = {CN_TO_EN[key]: _clamp_score(normalized.get(key, 0.0)) for key in EMOTION_KEYS_CN}
    if all(v <= 0.0 for v in scores.values()):
        log.info("QwenEmotion detected no emotion; using calm")
        scores["calm"] = 1.0
    return scores


def parse_emotion_output(content: str, text_input: str) -> dict[str, float]:
    """The emotion scores for the model's decoded answer ``content`` to ``text_input``, exactly as upstream.

    Raises ``ValueError`` for a non-numeric score (or an unparsable number in the regex fallback) and
    ``AttributeError`` when the melancholic swap meets an answer that is valid JSON but not an object.
    """
    try:
        parsed: Any = json.loads(content)
    except json.JSONDecodeError:
        parsed = {m.group(1): float(m.group(2)) for m in _REGEX_FALLBACK.finditer(content)}
    lowered = text_input.lower()
    if any(word in lowered for word in MELANCHOLIC_WORDS):
        if not isinstance(parsed, dict):
            raise AttributeError(
                f"'{type(parsed).__name__}' object has no attribute 'get'"
                f" (QwenEmotion answered {content!r}, not a JSON object of emotion scores)"
            )
        parsed["悲伤"], parsed["低落"] = parsed.get("低落", 0.0), parsed.get("悲伤", 0.0)
    return convert_scores(parsed)


# ============================================================================================== Qwen3 model


@dataclass
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    max_position_embeddings: int = 40960
    eos_token_id: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | Path = "config.json") -> Qwen3Config:
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"Qwen3 config {source} lacks required keys: {', '.join(missing)}")
        if data.get("model_type", "qwen3") != "qwen3":
            raise CheckpointError(f"Qwen3 config {source}: model_type is {data.get('model_type')!r}, expected 'qwen3'")
        if data.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"Qwen3 config {source}: hidden_act {data.get('hidden_act')!r} is not supported")
        scaling = data.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise CheckpointError(f"Qwen3 config {source}: rope_scaling {scaling} is not supported")
        if data.get("use_sliding_window"):
            raise CheckpointError(f"Qwen3 config {source}: sliding-window attention is not supported")
        heads = int(data["num_attention_heads"])
        eos = data.get("eos_token_id")
        return cls(
            vocab_size=int(data["vocab_size"]),
            hidden_size=int(data["hidden_size"]),
            intermediate_size=int(data["intermediate_size"]),
            num_hidden_layers=int(data["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(data.get("head_dim") or data["hidden_size"] // heads),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            rope_theta=float(data.get("rope_theta", 10000.0)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            attention_bias=bool(data.get("attention_bias", False)),
            max_position_embeddings=int(data.get("max_position_embeddings", 40960)),
            eos_token_id=_id_list(eos),
        )


def _id_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, normalized in float32 (as HF Qwen3)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    """Half-split RoPE: ``(cos, sin)`` for integer positions, computed in float32."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # [L, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Per-layer key/value buffers ``[B, kv_heads, capacity, head_dim]`` that grow by doubling."""

    def __init__(self, layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * layers
        self.values: list[Tensor | None] = [None] * layers
        self.length = 0  # positions stored (valid after every layer of a step has appended)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        start, n = self.length, k.shape[2]
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if buf_k is None or buf_v is None or buf_k.shape[2] < start + n:
            capacity = max(64, 2 * (start + n))
            new_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            new_v = v.new_empty(new_k.shape)
            if buf_k is not None and buf_v is not None:
                new_k[:, :, :start] = buf_k[:, :, :start]
                new_v[:, :, :start] = buf_v[:, :, :start]
            self.keys[layer], self.values[layer] = buf_k, buf_v = new_k, new_v
        buf_k[:, :, start : start + n] = k
        buf_v[:, :, start : start + n] = v
        return buf_k[:, :, : start + n], buf_v[:, :, : start + n]


class Qwen3Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache | None, layer: int) -> Tensor:
        b, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, n, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        if self.kv_heads != self.heads:  # query head h uses kv head h // (heads / kv_heads)
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if n == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        elif past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = torch.ones(n, past + n, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Qwen3MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.self_attn = Qwen3Attention(cfg)
        self.mlp = Qwen3MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)

    def forward(self, ids: Tensor, cache: KVCache | None = None) -> Tensor:
        start = cache.length if cache is not None else 0
        x = self.embed_tokens(ids)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        rope = self.rotary(positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, cache, i)
        if cache is not None:
            cache.length += ids.shape[1]
        return self.norm(x)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Qwen3Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """``ids [B, L]`` -> logits ``[B, L, vocab]`` (float32); with a cache, ``ids`` continue its positions."""
        return self.logits(self.model(ids, cache))

    def logits(self, hidden: Tensor) -> Tensor:
        weight = self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, weight).float()

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        eos_token_ids: Sequence[int] = (),
        on_step: Callable[[Tensor], None] | None = None,
    ) -> list[int]:
        """Greedy decoding with a KV cache; returns the new ids (including the EOS that stopped it, as HF does).

        ``on_step`` receives the raw logits ``[vocab]`` each token was chosen from.
        """
        if not prompt_ids:
            raise ValueError("generate() needs at least one prompt token")
        device = self.model.embed_tokens.weight.device
        cache = KVCache(len(self.model.layers))
        # prefill: only the last position's logits are needed (the LM head is a 151936-row matmul per position)
        logits = self.logits(self.model(torch.tensor([list(prompt_ids)], device=device), cache)[0, -1])
        stop = set(eos_token_ids)
        out: list[int] = []
        for step in range(max_new_tokens):
            if on_step is not None:
                on_step(logits)
            token = int(torch.argmax(logits))
            out.append(token)
            if token in stop:
                break
            if step + 1 < max_new_tokens:
                logits = self(torch.tensor([[token]], device=device), cache)[0, -1]
        else:
            if max_new_tokens:
                log.warning("Qwen3 generation stopped at max_new_tokens=%d without an end token", max_new_tokens)
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Qwen3ForCausalLM:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"Qwen3 model folder not found: {directory}")
        config_path = directory / "config.json"
        cfg = Qwen3Config.from_dict(load_json(config_path, what="Qwen3 config"), source=config_path)
        state, source = _load_weights(directory)
        if cfg.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied: HF uses the embedding matrix
        with torch.device("meta"):  # no random init: every weight comes from the file
            model = cls(cfg)
        model.model.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)  # its table is not in the file
        load_strict(model, state, source=source, what="Qwen3 weights", assign=True)
        return model.to(device=device, dtype=dtype).eval()


def _load_weights(directory: Path) -> tuple[dict[str, Tensor], Path]:
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.exists():
        return load_safetensors(single, what="Qwen3 weights"), single
    if index.exists():
        shards = sorted(set(load_json(index, what="Qwen3 weight index").get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"Qwen3 weight index {index} lists no files")
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_safetensors(directory / shard, what="Qwen3 weights"))
        return state, index
    legacy = directory / "pytorch_model.bin"
    if legacy.exists():
        return load_state(legacy, what="Qwen3 weights"), legacy
    raise CheckpointError(
        f"Qwen3 weights not found in {directory} (expected model.safetensors). "
        "Re-download the model files (python main.py models download)."
    )


# ============================================================================================== tokenizer + template


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], **variables: Any) -> str:
    """Render an HF chat template as ``apply_chat_template(tokenize=False)`` does (sandboxed jinja2,
    ``trim_blocks``, ``lstrip_blocks``, loop controls, HF's ``tojson``/``raise_exception``/``strftime_now``)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template).render(messages=list(messages), **variables)


class TextTokenizer(Protocol):
    """What :class:`QwenEmotion` needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class QwenTokenizer:
    """``tokenizer.json`` via the ``tokenizers`` library, with the folder's ``tokenizer_config.json`` settings."""

    def __init__(self, tokenizer_file: str | Path, config: Mapping[str, Any] | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(tokenizer_file)
        if not path.is_file():
            raise CheckpointError(f"Qwen tokenizer not found: {path}. Re-download the model files "
                                  "(python main.py models download).")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a plain Exception for malformed files
            raise CheckpointError(f"Qwen tokenizer {path} is corrupt ({exc}). Re-download the model files.") from exc
        self.config = dict(config or {})
        self.clean_up_spaces = bool(self.config.get("clean_up_tokenization_spaces", False))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=True).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_spaces:  # HF's clean_up_tokenization
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def special_tokens(self) -> dict[str, str]:
        """``bos_token``/``eos_token``/... strings for the chat template, from tokenizer_config.json."""
        out = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = self.config.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                out[key] = value
        return out


def load_chat_template(directory: str | Path) -> str:
    """The chat template of an HF model folder: ``chat_template.jinja``, else ``tokenizer_config.json``'s."""
    directory = Path(directory)
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    template = load_json(config_path, what="Qwen tokenizer config").get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise CheckpointError(f"No chat template in {config_path} (and no chat_template.jinja next to it). "
                              "Re-download the model files (python main.py models download).")
    return template


# ============================================================================================== QwenEmotion


class EmotionGenerator(Protocol):
    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, eos_token_ids: Sequence[int]) -> list[int]:
        ...


class QwenEmotion:
    """Text -> 8 emotion scores (``happy angry sad afraid disgusted melancholic surprised calm``)."""

    def __init__(
        self,
        model: EmotionGenerator,
        tokenizer: TextTokenizer,
        chat_template: str,
        *,
        eos_token_ids: Sequence[int],
        think_end_id: int = THINK_END_ID,
        template_variables: Mapping[str, Any] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.eos_token_ids = list(eos_token_ids)
        self.think_end_id = think_end_id
        self.template_variables = dict(template_variables or {})
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> QwenEmotion:
        """Load ``qwen0.6bemo4-merge``: config.json, model.safetensors, tokenizer.json, tokenizer_config.json
        (+ optional generation_config.json, chat_template.jinja). Float32 unless ``dtype`` is given."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"QwenEmotion model folder not found: {directory}. Run 'python main.py models "
                                  "download' or choose another emotion mode.")
        tok_config_path = directory / "tokenizer_config.json"
        tok_config = load_json(tok_config_path, what="Qwen tokenizer config") if tok_config_path.exists() else {}
        tokenizer = QwenTokenizer(directory / "tokenizer.json", tok_config)
        template = load_chat_template(directory)
        model = Qwen3ForCausalLM.from_pretrained(directory, device=device, dtype=dtype or torch.float32)
        eos = list(model.cfg.eos_token_id)
        gen_path = directory / "generation_config.json"
        if gen_path.exists():
            gen = load_json(gen_path, what="Qwen generation config")
            eos = _id_list(gen.get("eos_token_id")) or eos
            if gen.get("do_sample"):
                log.info("QwenEmotion: %s asks for sampling; decoding greedily (deterministic)", gen_path)
        eos_text = tokenizer.special_tokens().get("eos_token")
        eos_id = tokenizer.token_id(eos_text) if eos_text else None
        if eos_id is not None and eos_id not in eos:
            eos.append(eos_id)
        if not eos:
            raise CheckpointError(f"QwenEmotion {directory}: no eos_token_id in config.json or generation_config.json")
        think_end = tokenizer.token_id("</think>")
        return cls(
            model,
            tokenizer,
            template,
            eos_token_ids=eos,
            think_end_id=THINK_END_ID if think_end is None else think_end,
            template_variables=tokenizer.special_tokens(),
        )

    def render_prompt(self, text: str) -> str:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        return render_chat_template(
            self.chat_template, messages, add_generation_prompt=True, enable_thinking=False,
            **self.template_variables,
        )

    def answer(self, text: str) -> str:
        """The model's decoded answer (after any ``</think>``) for ``text``."""
        prompt_ids = self.tokenizer.encode(self.render_prompt(text))
        new_ids = self.model.generate(prompt_ids, max_new_tokens=self.max_new_tokens,
                                      eos_token_ids=self.eos_token_ids)
        return self.tokenizer.decode(strip_thinking(new_ids, self.think_end_id), skip_special_tokens=True)

    def inference(self, text: str) -> dict[str, float]:
        """Upstream ``QwenEmotion.inference``: the 8 scores (English names, upstream order)."""
        return parse_emotion_output(self.answer(text), text)

    def vector(self, text: str) -> list[float]:
        """The scores as a list: happy, angry, sad, afraid, disgusted, melancholic, surprised, calm."""
        scores = self.inference(text)
        return [scores[name] for name in EMOTION_KEYS_EN]
