"""Qwen3 causal LM (HF ``Qwen3ForCausalLM`` at inference), used by :mod:`core.qwen_emotion`.

RMSNorm, per-head q/k RMSNorm before RoPE, grouped-query attention, SiLU-gated MLP, tied embeddings when the config
says so, and greedy decoding over a KV cache; no ``transformers`` needed. Attribute names follow the HF checkpoint
keys, so ``model.safetensors`` loads strictly as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoints import CheckpointError, load_json, load_safetensors, load_state, load_strict, skeleton

log = logging.getLogger(__name__)


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
            eos_token_id=id_list(eos),
        )


def id_list(value: Any) -> list[int]:
    """A config's ``eos_token_id`` (absent, one id or a list) as a list of ints."""
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

    inv_freq: Tensor  # non-persistent buffer [head_dim / 2]

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
        state = checkpoint_state(state, cfg)
        with skeleton():  # no random init: every weight comes from the file
            model = cls(cfg)
        model.model.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)  # its table is not in the file
        load_strict(model, state, source=source, what="Qwen3 weights", assign=True)
        return model.to(device=device, dtype=dtype).eval()


def checkpoint_state(state: dict[str, Tensor], cfg: Qwen3Config) -> dict[str, Tensor]:
    """A Qwen3 state dict as our model holds it: with tied embeddings a stored ``lm_head.weight`` is dropped
    (transformers leaves it out of a tied model's file, but some exports keep the copy); HF uses the embedding."""
    if cfg.tie_word_embeddings and "lm_head.weight" in state:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return state


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
