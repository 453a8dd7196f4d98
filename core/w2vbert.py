"""w2v-BERT 2.0 speech encoder (the computation of HF ``Wav2Vec2BertModel`` at inference) and IndexTTS2's
normalised semantic features.

Loads the official ``facebook/w2v-bert-2.0`` directory (``config.json`` + ``model.safetensors``) unchanged:
module attribute names mirror the checkpoint keys, so the load is strict.

Shapes: ``input_features`` [B, T, 160] (stacked fbank from the SeamlessM4T front end), ``attention_mask``
[B, T] (1 = real frame, 0 = padding), hidden states [B, T, hidden_size].

Only the relative-key conformer without adapter is implemented (what the released model uses); any other
configuration is refused with a message naming the config file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoints import CheckpointError, load_hf_dir, load_strict, load_torch, skeleton

log = logging.getLogger(__name__)

# IndexTTS2 uses hidden_states[17] (the output of 0-based layer 16), not the last layer.
SEMANTIC_LAYER = 17


@dataclass(frozen=True)
class W2VBertConfig:
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    feature_projection_input_dim: int = 160
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    conv_depthwise_kernel_size: int = 31
    layer_norm_eps: float = 1e-5
    has_masked_spec_embed: bool = True  # HF creates `masked_spec_embed` iff a spec-augment mask prob is > 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], *, source: str | Path = "config.json") -> W2VBertConfig:
        """Build from an HF ``config.json`` dict, refusing settings this port does not implement."""
        unsupported = {
            "position_embeddings_type": ("relative_key",),
            "hidden_act": ("swish", "silu"),
            "add_adapter": (False,),
            "use_intermediate_ffn_before_adapter": (False,),
        }
        for key, allowed in unsupported.items():
            if key in cfg and cfg[key] not in allowed:
                raise CheckpointError(
                    f"w2v-BERT config {source}: {key}={cfg[key]!r} is not supported (expected {allowed[0]!r}). "
                    "Use the facebook/w2v-bert-2.0 model folder."
                )
        try:
            config = cls(
                hidden_size=int(cfg["hidden_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=int(cfg["num_attention_heads"]),
                intermediate_size=int(cfg["intermediate_size"]),
                feature_projection_input_dim=int(cfg["feature_projection_input_dim"]),
                left_max_position_embeddings=int(cfg["left_max_position_embeddings"]),
                right_max_position_embeddings=int(cfg["right_max_position_embeddings"]),
                conv_depthwise_kernel_size=int(cfg["conv_depthwise_kernel_size"]),
                layer_norm_eps=float(cfg["layer_norm_eps"]),
                has_masked_spec_embed=float(cfg.get("mask_time_prob", 0.0)) > 0
                or float(cfg.get("mask_feature_prob", 0.0)) > 0,
            )
        except KeyError as exc:
            raise CheckpointError(f"w2v-BERT config {source} lacks the field {exc.args[0]!r}.") from exc
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"w2v-BERT config {source} has a malformed value ({exc}).") from exc
        if config.hidden_size % config.num_attention_heads:
            raise CheckpointError(
                f"w2v-BERT config {source}: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}."
            )
        return config


class FeatureProjection(nn.Module):
    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.feature_projection_input_dim, eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.feature_projection_input_dim, cfg.hidden_size)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        normed = self.layer_norm(features)
        return self.projection(normed), normed


class FeedForward(nn.Module):
    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(F.silu(self.intermediate_dense(x)))


class SelfAttention(nn.Module):
    """Multi-head attention with relative-key position scores.

    score(i, j) = (q_i . k_j + q_i . E[clamp(j - i, -left, right) + left]) / sqrt(head_dim) + key mask.
    """

    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.left = cfg.left_max_position_embeddings
        self.right = cfg.right_max_position_embeddings
        d = cfg.hidden_size
        self.linear_q = nn.Linear(d, d)
        self.linear_k = nn.Linear(d, d)
        self.linear_v = nn.Linear(d, d)
        self.linear_out = nn.Linear(d, d)
        self.distance_embedding = nn.Embedding(self.left + self.right + 1, self.head_dim)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """x [B, T, D]; key_bias [B, 1, 1, T] additive (0 or a large negative value)."""
        b, t, d = x.shape
        q, k, v = (
            lin(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
            for lin in (self.linear_q, self.linear_k, self.linear_v)
        )
        # q . E[r] for every bucket r, then picked per (i, j): [B, H, T, R] -> [B, H, T, T]
        pos = torch.arange(t, device=x.device)
        bucket = (pos[None, :] - pos[:, None]).clamp(-self.left, self.right) + self.left
        per_bucket = q @ self.distance_embedding.weight.to(q.dtype).t()
        rel = per_bucket.gather(-1, bucket.expand(b, self.num_heads, t, t))
        bias = rel / math.sqrt(self.head_dim) + key_bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.linear_out(out.transpose(1, 2).reshape(b, t, d))


class ConvolutionModule(nn.Module):
    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.kernel_size = cfg.conv_depthwise_kernel_size
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, self.kernel_size, groups=d, bias=False)
        self.depthwise_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)

    def forward(self, x: Tensor, pad_rows: Tensor | None) -> Tensor:
        """x [B, T, D]; pad_rows [B, T, 1] bool (True = padding) or None."""
        x = self.layer_norm(x)
        if pad_rows is not None:
            x = x.masked_fill(pad_rows, 0.0)
        x = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        x = self.depthwise_conv(F.pad(x, (self.kernel_size - 1, 0)))  # causal: pad on the left only
        x = F.silu(self.depthwise_layer_norm(x.transpose(1, 2)))
        return self.pointwise_conv2(x.transpose(1, 2)).transpose(1, 2)


class ConformerLayer(nn.Module):
    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.ffn1_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn1 = FeedForward(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = SelfAttention(cfg)
        self.conv_module = ConvolutionModule(cfg)
        self.ffn2_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn2 = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor, key_bias: Tensor, pad_rows: Tensor | None) -> Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), key_bias)
        x = x + self.conv_module(x, pad_rows)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class Encoder(nn.Module):
    """The conformer stack; no LayerNorm after the last layer."""

    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_hidden_layers))


@dataclass
class W2VBertOutput:
    extract_features: Tensor  # [B, T, 160] LayerNorm-ed input features
    hidden_states: list[Tensor]  # entry k = input of layer k; entry 0 = masked projection


class W2VBert(nn.Module):
    def __init__(self, cfg: W2VBertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Encoder(cfg)
        if cfg.has_masked_spec_embed:  # only used for training-time spec augment; kept so the load is strict
            self.masked_spec_embed = nn.Parameter(torch.zeros(cfg.hidden_size))

    @property
    def num_layers(self) -> int:
        """Layers currently held (may be fewer than the config's after :meth:`keep_layers`)."""
        return len(self.encoder.layers)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> W2VBert:
        """Strictly load an HF ``Wav2Vec2BertModel`` directory (``config.json`` + ``model.safetensors``)."""
        directory = Path(directory)
        raw_cfg, state = load_hf_dir(directory, what="w2v-BERT model folder")
        cfg = W2VBertConfig.from_hf(raw_cfg, source=directory / "config.json")
        weights = directory / "model.safetensors"
        if not weights.exists():
            weights = directory / "pytorch_model.bin"
        # Build a weightless skeleton, check the keys and shapes strictly against it, then adopt the file's
        # memory-mapped tensors instead of copying them: the 2.3 GB of weights are never held twice nor randomly
        # initialised, and the layers after the one IndexTTS2 reads (dropped by SemanticEncoder) are never read.
        with skeleton():
            model = cls(cfg)
        load_strict(model, {k: v.float() for k, v in state.items()}, source=weights, what="w2v-BERT weights",
                    assign=True)
        log.info("loaded w2v-BERT (%d layers, hidden %d) from %s", cfg.num_hidden_layers, cfg.hidden_size, directory)
        return model.eval()

    def keep_layers(self, n: int) -> None:
        """Drop the layers after the first ``n`` to free memory when only ``hidden_states[<= n]`` is needed."""
        if not 0 <= n <= self.num_layers:
            raise ValueError(f"cannot keep {n} layers, the model has {self.num_layers}")
        del self.encoder.layers[n:]

    def _embed(
        self, input_features: Tensor, attention_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(masked projection, normalised features, additive key bias [B,1,1,T], padding rows [B,T,1] or None)."""
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.feature_projection_input_dim:
            raise ValueError(
                f"input_features must be [B, T, {self.config.feature_projection_input_dim}], "
                f"got {tuple(input_features.shape)}"
            )
        x, normed = self.feature_projection(input_features)
        b, t, _ = x.shape
        if attention_mask is None:
            return x, normed, x.new_zeros(b, 1, 1, t), None
        if tuple(attention_mask.shape) != (b, t):
            raise ValueError(f"attention_mask must be [{b}, {t}], got {tuple(attention_mask.shape)}")
        pad = ~attention_mask.bool()
        pad_rows = pad[:, :, None]
        x = x.masked_fill(pad_rows, 0.0)
        key_bias = x.new_zeros(b, 1, 1, t).masked_fill(pad[:, None, None, :], torch.finfo(x.dtype).min)
        return x, normed, key_bias, pad_rows

    @torch.no_grad()
    def forward(
        self, input_features: Tensor, attention_mask: Tensor | None = None, output_layer: int = SEMANTIC_LAYER
    ) -> Tensor:
        """``hidden_states[output_layer]``, running only layers ``0 .. output_layer - 1``."""
        if not 0 <= output_layer <= self.num_layers:
            raise ValueError(f"output_layer must be in 0..{self.num_layers}, got {output_layer}")
        x, _, key_bias, pad_rows = self._embed(input_features, attention_mask)
        for layer in self.encoder.layers[:output_layer]:
            x = layer(x, key_bias, pad_rows)
        return x

    @torch.no_grad()
    def all_hidden_states(self, input_features: Tensor, attention_mask: Tensor | None = None) -> W2VBertOutput:
        """Every hidden state (``num_layers + 1`` entries) and the normalised input, as HF returns them."""
        x, normed, key_bias, pad_rows = self._embed(input_features, attention_mask)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x, key_bias, pad_rows)
            states.append(x)
        return W2VBertOutput(extract_features=normed, hidden_states=states)


def load_semantic_stats(path: str | Path, hidden_size: int) -> tuple[Tensor, Tensor]:
    """``(mean, std)`` [hidden_size] from ``wav2vec2bert_stats.pt`` (a dict with ``mean`` and ``var``)."""
    what = "w2v-BERT stats file"
    stats = load_torch(path, what=what)
    if not isinstance(stats, Mapping) or not {"mean", "var"} <= set(stats):
        found = sorted(stats) if isinstance(stats, Mapping) else type(stats).__name__
        raise CheckpointError(
            f"{what} {path} must hold a dict with 'mean' and 'var' (found {found}). "
            "Use wav2vec2bert_stats.pt from the IndexTTS-2 checkpoints."
        )
    out = []
    for key in ("mean", "var"):
        value = stats[key]
        if not isinstance(value, Tensor) or tuple(value.shape) != (hidden_size,):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f"{what} {path}: '{key}' must be a tensor of shape ({hidden_size},) to match the w2v-BERT "
                f"hidden size, found {shape}."
            )
        out.append(value.float())
    mean, var = out
    if not torch.isfinite(mean).all() or not (torch.isfinite(var).all() and (var > 0).all()):
        raise CheckpointError(f"{what} {path}: 'mean' must be finite and 'var' finite and positive.")
    return mean, var.sqrt()


class SemanticEncoder(nn.Module):
    """IndexTTS2 ``get_emb``: ``(hidden_states[17] - mean) / std`` with the ``wav2vec2bert_stats`` file."""

    def __init__(self, model: W2VBert, mean: Tensor, std: Tensor, output_layer: int = SEMANTIC_LAYER) -> None:
        super().__init__()
        if not 0 <= output_layer <= model.num_layers:
            raise ValueError(f"output_layer {output_layer} is beyond the model's {model.num_layers} layers")
        model.keep_layers(output_layer)
        self.model = model
        self.output_layer = output_layer
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @classmethod
    def from_files(
        cls, w2v_dir: str | Path, stats_path: str | Path, output_layer: int = SEMANTIC_LAYER
    ) -> SemanticEncoder:
        model = W2VBert.from_pretrained(w2v_dir)
        if model.num_layers < output_layer:
            raise CheckpointError(
                f"w2v-BERT model in {w2v_dir} has {model.num_layers} layers; IndexTTS2 needs hidden state "
                f"{output_layer}. Use the facebook/w2v-bert-2.0 model folder."
            )
        mean, std = load_semantic_stats(stats_path, model.config.hidden_size)
        return cls(model, mean, std, output_layer).eval()

    @torch.no_grad()
    def embed(self, input_features: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """[B, T, 160] features (+ [B, T] mask) -> [B, T, hidden] normalised semantic features."""
        hidden = self.model(input_features, attention_mask, output_layer=self.output_layer)
        return (hidden - self.mean) / self.std

    def forward(self, input_features: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.embed(input_features, attention_mask)
