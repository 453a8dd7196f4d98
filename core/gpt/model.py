"""UnifiedVoice v2: the autoregressive GPT of IndexTTS-2 (upstream ``indextts/gpt/model_v2.py``).

Our own port: conditioning (conformer + perceiver for the speaker, a second pair for the emotion), the
emotion-vector projection, and a GPT-2 stack with a preallocated KV cache for decoding (see ``generate.py``).
Attribute names mirror the official ``gpt.pth`` keys so the file loads with ``load_state_dict(strict=True)``.

GPT-2 details kept from HF ``GPT2Model`` as upstream builds it: pre-LayerNorm blocks (eps 1e-5), ``gelu_new``
(tanh) MLP of width ``4 * model_dim``, HF ``Conv1D`` linears whose weights are stored ``[in, out]``, no token or
position embedding inside GPT-2 (``wte``/``wpe`` removed; learned text/mel position tables are added outside),
``ln_f`` at the end and then UnifiedVoice's own ``final_norm`` before ``mel_head``.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checkpoints import (
    CheckpointError,
    empty_populated,
    load_strict,
    load_torch,
    prefault,
    release_pages,
    skeleton,
)
from core.config import GPTConfig
from core.gpt.conformer import ConformerEncoder
from core.gpt.perceiver import PerceiverResampler

log = logging.getLogger(__name__)

# Upstream's values for the two widths the config does not state: the w2v-BERT feature width both conformers
# take, and the emotion perceiver width (fixed upstream whatever model_dim is). ``from_checkpoint`` reads both
# from the weights; these defaults only serve models built from scratch (benches, self-test).
DEFAULT_SEMANTIC_DIM = 1024
DEFAULT_EMO_PERCEIVER_DIM = 1024


def conditioning_widths(
    state: dict[str, Tensor], cfg: GPTConfig, semantic_dim: int | None = None, source: str | Path = "gpt.pth"
) -> tuple[int, int]:
    """``(semantic_dim, emo_perceiver_dim)`` from a gpt.pth state dict.

    The conv2d2 subsampling's Linear takes ``channels * ((semantic_dim - 1) // 2)`` inputs, which fixes the feature
    width up to one (both widths compute the same thing); ``semantic_dim`` (e.g. the codec's ``hidden_size``)
    picks between them, else the even one is used. The emotion perceiver width is its latents' width.
    """
    key, module = "conditioning_encoder.embed.out.0.weight", cfg.condition_module
    if key not in state and "spk_emb_proj.weight" in state:  # 2.5 (campplus): only the emotion conformer reads them
        key, module = "emo_conditioning_encoder.embed.out.0.weight", cfg.emo_condition_module
    if key not in state:
        raise CheckpointError(f"GPT checkpoint (gpt.pth) {source} lacks {key}: it is not an IndexTTS-2 GPT. "
                              "Re-download the model files (python main.py models download).")
    half = int(state[key].shape[1]) // module.output_size
    if semantic_dim is None or (semantic_dim - 1) // 2 != half:
        semantic_dim = 2 * half + 2
    latents = state.get("emo_perceiver_encoder.latents")
    emo_dim = int(latents.shape[-1]) if latents is not None else DEFAULT_EMO_PERCEIVER_DIM
    return semantic_dim, emo_dim
MAX_CONDITIONING_INPUTS = 1  # upstream default; adds one row to the mel position table
# IndexTTS-2.5 ("campplus" speaker mode): the CAMPPlus embedding width spk_emb_proj takes, and the rows of
# lang_embedding (the 106 language codes of core.text.v25_vocab plus one never used).
CAMPPLUS_DIM = 192
LANG_ROWS = 107
FAKE_PROMPT_ID = 1  # upstream's fake input_ids are torch.ones(...): the repetition penalty sees id 1

# Keys older transformers versions saved as persistent GPT-2 buffers (the causal mask ``attn.bias`` and the
# constant ``attn.masked_bias``). They hold no learned values; we build causality into the attention call.
_STRAY_GPT2_BUFFER = re.compile(r"^gpt\.h\.\d+\.attn\.(bias|masked_bias)$")


FEW_ROWS = 8
"""Up to this many rows (the beams of a decode step) :func:`few_rows_linear` streams the weight once."""


def few_rows_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)``; for 2..FEW_ROWS rows of a 2-D ``x`` on the CPU computed as ``W @ x^T``.

    With a ``[out, in]``-contiguous weight that is one streaming pass over the weight for all rows; the CPU GEMM
    behind ``F.linear`` with 3 rows reads it about three times (measured on the released GPT, 2 threads, one decode
    step of 3 beams: 326 -> 99 ms; 1 thread: 317 -> 161 ms). Same dot products, summed in another order.
    """
    rows = x.shape[0]
    if x.dim() != 2 or not 1 < rows <= FEW_ROWS or x.device.type != "cpu" or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.mm(weight, x.t()).t().contiguous()
    return torch.addmm(bias[:, None], weight, x.t()).t().contiguous()


class Conv1D(nn.Module):
    """HF GPT-2 ``Conv1D``: ``y = x @ W + b`` with ``W`` stored ``[in, out]``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return few_rows_linear(x, self.weight.t(), self.bias)

    def store_out_major(self, release: bool = False) -> None:
        """Keep the ``[in, out]`` parameter but back it by ``[out, in]`` memory.

        ``weight.t()`` is then contiguous, which lets the CPU GEMM stream each weight once for several rows
        (3 beams): measured 41 ms vs 68 ms per step for the 24 real layers on 2 threads.
        ``release`` (a weight just loaded that nothing else reads): the pages of the ``[in, out]`` original are
        released (:func:`~core.checkpoints.release_pages`), so a memory-mapped checkpoint does not hold both.
        """
        w = self.weight.data
        if w.t().is_contiguous():
            return
        if w.device.type == "cpu":
            prefault([w])
            out_major = empty_populated(w.shape[1], w.shape[0], dtype=w.dtype).copy_(w.t())
        else:
            out_major = w.t().contiguous()
        self.weight.data = out_major.t()
        if release:
            release_pages(w)


class GPT2Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[..., 3D]`` -> q, k, v each ``[..., H, hd]``."""
        qkv = self.c_attn(x)
        return qkv.view(*x.shape[:-1], 3, self.heads, self.head_dim).unbind(-3)

    def forward(self, x: Tensor) -> Tensor:
        """Full causal pass without cache: x [B, T, D]."""
        b, t, d = x.shape
        q, k, v = (y.transpose(1, 2) for y in self._split(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(out.transpose(1, 2).reshape(b, t, d))

    def prefill(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Causal pass over the prompt x [1, T, D]; stores its keys/values in cache entries 0..T-1."""
        _, t, d = x.shape
        q, k, v = (y[0].transpose(0, 1) for y in self._split(x))  # [H, T, hd]
        k_cache[:, :t] = k
        v_cache[:, :t] = v
        out = F.scaled_dot_product_attention(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), is_causal=True)
        return self.c_proj(out[0].transpose(0, 1).reshape(1, t, d))

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor, write: int, n: int, bias: Tensor | None) -> Tensor:
        """One decode step for S rows x [S, D]: row s stores its key/value at cache entry ``write + s`` and
        attends to entries ``0..n-1`` with the additive ``bias`` [S, n] (None: everything visible)."""
        s, d = x.shape
        q, k, v = self._split(x)  # [S, H, hd]
        k_cache[:, write : write + s] = k.transpose(0, 1)
        v_cache[:, write : write + s] = v.transpose(0, 1)
        keys = k_cache[:, :n].unsqueeze(0)
        values = v_cache[:, :n].unsqueeze(0)
        attn_mask = None if bias is None else bias[None, None]
        out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), keys, values, attn_mask=attn_mask)
        return self.c_proj(out[0].transpose(0, 1).reshape(s, d))


class GPT2MLP(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.c_fc = Conv1D(dim, inner)
        self.c_proj = Conv1D(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = GPT2Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = GPT2MLP(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class KVCache:
    """Static keys/values for every layer ``[layers, H, entries, hd]``, allocated once per decode.

    Entries ``0..prompt_len-1`` hold the prompt (computed once, shared by every slot); decode position
    ``prompt_len + g`` of slot ``s`` lives at entry ``prompt_len + g * slots + s``. So the entries a step attends
    to are always a prefix. ``torch.empty`` leaves untouched pages uncommitted: memory grows with use.
    """

    def __init__(
        self, layers: int, heads: int, head_dim: int, prompt_len: int, max_new: int, slots: int,
        device: torch.device, dtype: torch.dtype,
    ) -> None:
        self.prompt_len = prompt_len
        self.slots = slots
        self.k = torch.empty(layers, heads, prompt_len + max_new * slots, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)

    def entry(self, pos: int) -> int:
        """First cache entry of decode position ``pos`` (>= prompt_len)."""
        return self.prompt_len + (pos - self.prompt_len) * self.slots


class GPT2Stack(nn.Module):
    """``gpt.h.N`` blocks and ``gpt.ln_f`` (GPT2Model without wte/wpe)."""

    def __init__(self, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.h = nn.ModuleList(GPT2Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: Tensor, hidden: list[Tensor] | None = None) -> Tensor:
        """Uncached causal pass x [B, T, D] -> ln_f output; ``hidden`` collects every block's residual stream."""
        for block in self.h:
            x = block(x)
            if hidden is not None:
                hidden.append(x)
        return self.ln_f(x)

    @property
    def blocks(self) -> Iterable[GPT2Block]:
        """The blocks of ``h`` in order, typed."""
        return typing.cast(Iterable[GPT2Block], self.h)

    def prefill(self, x: Tensor, cache: KVCache) -> Tensor:
        """Prompt x [1, T, D] into the cache; returns ln_f of the last row [1, D]."""
        for i, block in enumerate(self.blocks):
            x = x + block.attn.prefill(block.ln_1(x), cache.k[i], cache.v[i])
            x = x + block.mlp(block.ln_2(x))
        return self.ln_f(x[:, -1])

    def step(self, x: Tensor, cache: KVCache, pos: int, bias: Tensor | None) -> Tensor:
        """One token per slot x [S, D] at decode position ``pos``; returns ln_f output [S, D].

        ``bias`` [S, entries through this position] is the additive attention mask (None for one slot).
        """
        write = cache.entry(pos)
        n = write + cache.slots
        for i, block in enumerate(self.blocks):
            x = x + block.attn.step(_rowwise(block.ln_1, x), cache.k[i], cache.v[i], write, n, bias)
            x = x + block.mlp(_rowwise(block.ln_2, x))
        return _rowwise(self.ln_f, x)


def _rowwise(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm of a few rows, one row per call on the CPU.

    The CPU kernel splits even 3 rows across threads; that thread hand-off costs more than the work and,
    on a busy machine, a scheduler time slice per call (measured 11 ms vs 5 us for [3, 1280] at load 6 on
    2 cores). Per row the arithmetic is identical.
    """
    if x.shape[0] == 1 or x.device.type != "cpu":
        return norm(x)
    return torch.cat([norm(row) for row in x.split(1)])


class LearnedPositionEmbedding(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(rows, dim)

    def forward(self, positions: Tensor) -> Tensor:
        return self.emb(positions)


def _as_id_tensor(ids: Sequence[int] | Tensor, device: torch.device) -> Tensor:
    t = ids if isinstance(ids, Tensor) else torch.tensor(list(ids), dtype=torch.long)
    if t.dim() == 2:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one id sequence, got shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"expected ids as a list or a [1, L] / [L] tensor, got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.long)


class UnifiedVoice(nn.Module):
    def __init__(
        self, cfg: GPTConfig, semantic_dim: int = DEFAULT_SEMANTIC_DIM, emo_dim: int = DEFAULT_EMO_PERCEIVER_DIM,
        campplus: bool = False,
    ) -> None:
        """``campplus=True`` builds IndexTTS-2.5's GPT: the speaker enters as ``spk_emb_proj(CAMPPlus style)`` (no
        speaker conformer / perceiver / speed embedding) and ``lang_embedding`` is added to every text row."""
        super().__init__()
        if cfg.condition_type != "conformer_perceiver":
            raise ValueError(
                f"unsupported gpt.condition_type {cfg.condition_type!r} (IndexTTS-2 uses 'conformer_perceiver')"
            )
        if not cfg.use_mel_codes_as_input:
            raise ValueError("gpt.use_mel_codes_as_input must be true for IndexTTS-2")
        self.cfg = cfg
        dim = cfg.model_dim
        cm, em = cfg.condition_module, cfg.emo_condition_module
        self.campplus = campplus
        if campplus:
            self.spk_emb_proj = nn.Linear(CAMPPLUS_DIM, dim)
            self.lang_embedding = nn.Embedding(LANG_ROWS, dim)
        else:
            self.conditioning_encoder = ConformerEncoder(
                semantic_dim, cm.output_size, cm.attention_heads, cm.linear_units, cm.num_blocks, cm.input_layer
            )
            self.perceiver_encoder = PerceiverResampler(
                dim, cm.output_size, cfg.condition_num_latent, cm.attention_heads, cm.perceiver_mult
            )
            self.speed_emb = nn.Embedding(2, dim)
        self.emo_conditioning_encoder = ConformerEncoder(
            semantic_dim, em.output_size, em.attention_heads, em.linear_units, em.num_blocks, em.input_layer
        )
        self.emo_perceiver_encoder = PerceiverResampler(
            emo_dim, em.output_size, 1, em.attention_heads, em.perceiver_mult
        )
        self.text_embedding = nn.Embedding(cfg.number_text_tokens + 1, dim)
        self.emo_layer = nn.Linear(dim, dim)
        self.emovec_layer = nn.Linear(emo_dim, dim)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, dim)
        self.gpt = GPT2Stack(dim, cfg.heads, cfg.layers)
        self.mel_pos_embedding = LearnedPositionEmbedding(cfg.max_mel_tokens + 2 + MAX_CONDITIONING_INPUTS, dim)
        self.text_pos_embedding = LearnedPositionEmbedding(cfg.max_text_tokens + 2, dim)
        self.final_norm = nn.LayerNorm(dim)
        self.text_head = nn.Linear(dim, cfg.number_text_tokens + 1)  # in the checkpoint; unused at inference
        self.mel_head = nn.Linear(dim, cfg.number_mel_codes)

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, cfg: GPTConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
        semantic_dim: int | None = None, campplus: bool = False,
    ) -> UnifiedVoice:
        """Load ``gpt.pth`` (flat state dict or ``{'model': state}``) strictly (``campplus``: a 2.5 GPT).

        Widths the config does not give come from the weights (:func:`conditioning_widths`). Missing, unexpected
        or misshaped keys raise a CheckpointError that lists them.
        """
        state = load_torch(path, what="GPT checkpoint (gpt.pth)")
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise CheckpointError(
                f"GPT checkpoint (gpt.pth) {path} does not hold a state dict (found {type(state).__name__})."
            )
        stray = {k for k in state if _STRAY_GPT2_BUFFER.match(k)}
        if stray:
            log.debug("ignoring %d non-learned GPT-2 mask buffers from older transformers", len(stray))
            state = {k: v for k, v in state.items() if k not in stray}
        widths = conditioning_widths(state, cfg, semantic_dim, source=path)
        with skeleton():
            model = cls(cfg, *widths, campplus=campplus)
        # Strict keys/shapes check, then adopt the memory-mapped tensors without a second copy (3.5 GB real).
        load_strict(model, state, source=path, what="GPT checkpoint (gpt.pth)", assign=True)
        del state
        model.eval().requires_grad_(False)
        model = model.to(device=device, dtype=dtype)
        model.prepare_for_inference(release=True)
        return model

    def prepare_for_inference(self, release: bool = False) -> None:
        """The decode layout of the GPT-2 linears (:meth:`Conv1D.store_out_major`); ``release`` for weights
        nothing else reads (a model just loaded)."""
        for m in self.modules():
            if isinstance(m, Conv1D):
                m.store_out_major(release)

    @property
    def device(self) -> torch.device:
        return self.mel_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mel_head.weight.dtype

    # ------------------------------------------------------------------------------------------ conditioning
    def get_conditioning(
        self, spk_cond_emb: Tensor, lengths: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Speaker latents [1, 32, model_dim] (float32) from the speaker's w2v-BERT features [1, T, 1024].

        ``lengths`` masks frames ``t >= length``; None keeps every frame (infer_v2 passes 1024 = the feature
        width as length, which leaves every frame of a clip shorter than 1024 frames valid).
        """
        x = spk_cond_emb.to(self.device, self.dtype)
        enc_trace: dict[str, Tensor] | None = {} if trace is not None else None
        enc, mask = self.conditioning_encoder(x, lengths, enc_trace)
        per_trace: dict[str, Tensor] | None = {} if trace is not None else None
        out = self.perceiver_encoder(enc, mask, per_trace)
        if trace is not None:
            trace.update(enc_trace or {})
            trace.update({f"perceiver.{k}": v for k, v in (per_trace or {}).items()})
        return out.float()

    def get_emovec(
        self, cond_emb: Tensor, lengths: Tensor | None = None, trace: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Emotion vector [1, model_dim]: emotion conformer -> 1-latent perceiver -> emovec_layer -> emo_layer."""
        x = cond_emb.to(self.device, self.dtype)
        enc_trace: dict[str, Tensor] | None = {} if trace is not None else None
        enc, mask = self.emo_conditioning_encoder(x, lengths, enc_trace)
        per_trace: dict[str, Tensor] | None = {} if trace is not None else None
        pooled = self.emo_perceiver_encoder(enc, mask, per_trace).squeeze(1)
        projected = self.emovec_layer(pooled)
        out = self.emo_layer(projected)
        if trace is not None:
            trace.update(enc_trace or {})
            trace.update({f"perceiver.{k}": v for k, v in (per_trace or {}).items()})
            trace["emovec_layer_out"] = projected
            trace["emo_layer_out"] = out
        return out.float()

    def merge_emovec(
        self,
        spk_cond_emb: Tensor,
        emo_cond_emb: Tensor,
        alpha: float = 1.0,
        spk_lengths: Tensor | None = None,
        emo_lengths: Tensor | None = None,
    ) -> Tensor:
        """``base + alpha * (emo - base)`` with base = the EMOTION encoder run on the speaker features."""
        emo = self.get_emovec(emo_cond_emb, emo_lengths)
        base = self.get_emovec(spk_cond_emb, spk_lengths)
        return base + alpha * (emo - base)

    # -------------------------------------------------------------------------------------- input assembly
    def campplus_latent(self, style: Tensor) -> Tensor:
        """2.5: the one speaker latent ``spk_emb_proj(style)`` [1, 1, D] from the CAMPPlus style vector [1, 192]."""
        return self.spk_emb_proj(style.to(self.device, self.dtype)).reshape(1, 1, -1)

    def conds(self, spk_latent: Tensor, emovec: Tensor) -> Tensor:
        """[spk_latent + emovec (each row); speed_emb[1]; speed_emb[0]] -> [1, num_latent + 2, D]
        (2.5: two zero rows instead of the speed embeddings)."""
        lat = spk_latent.to(self.device, self.dtype)
        ev = emovec.to(self.device, self.dtype).reshape(1, 1, -1)
        if self.campplus:
            return torch.cat([lat + ev, lat.new_zeros(1, 2, lat.shape[-1])], dim=1)
        speed = self.speed_emb.weight
        return torch.cat([lat + ev, speed[1].view(1, 1, -1), speed[0].view(1, 1, -1)], dim=1)

    def _text_embedding(self, ids: Tensor, lang: int | None = None) -> Tensor:
        if ids.numel() + 2 > self.text_pos_embedding.emb.num_embeddings:
            raise ValueError(
                f"text segment too long: {ids.numel()} tokens, the GPT supports at most "
                f"{self.text_pos_embedding.emb.num_embeddings - 2}; split the text into shorter segments"
            )
        c = self.cfg
        ids = torch.cat([ids.new_tensor([c.start_text_token]), ids, ids.new_tensor([c.stop_text_token])])
        positions = torch.arange(ids.numel(), device=ids.device)
        emb = self.text_embedding(ids) + self.text_pos_embedding(positions)
        if lang is not None:  # 2.5: one language row added to every text row, start and stop included
            emb = emb + self.lang_embedding.weight[lang]
        return emb.unsqueeze(0)

    def prompt_embedding(
        self, text_ids: Sequence[int] | Tensor, spk_latent: Tensor, emovec: Tensor, lang: int | None = None
    ) -> Tensor:
        """Generation prefix [conds; start_text, text, stop_text] as upstream's prepare_gpt_inputs builds it.

        Every id equal to the start/stop text token is dropped before the two are added. Upstream pads the prompt
        on the left with one masked zero row per dropped id; GPT-2 has no position embedding, so leaving those
        rows out computes the same. ``lang`` (2.5 only) is the lang_embedding row of the segment's language.
        """
        ids = _as_id_tensor(text_ids, self.device)
        ids = ids[(ids != self.cfg.start_text_token) & (ids != self.cfg.stop_text_token)]
        return torch.cat([self.conds(spk_latent, emovec), self._text_embedding(ids, lang)], dim=1)

    def mel_input(self, tokens: Tensor, position: int) -> Tensor:
        """Embedding of decode tokens [S] at mel position ``position`` -> [S, D]."""
        return self.mel_embedding(tokens) + self.mel_pos_embedding.emb.weight[position]

    def mel_logits(self, hidden: Tensor) -> Tensor:
        """ln_f output -> final_norm -> mel_head, as float32."""
        return few_rows_linear(self.final_norm(hidden), self.mel_head.weight, self.mel_head.bias).float()

    # ------------------------------------------------------------------------------------------ generation
    def new_cache(self, prompt_len: int, max_new: int, slots: int) -> KVCache:
        c = self.cfg
        return KVCache(c.layers, c.heads, c.model_dim // c.heads, prompt_len, max_new, slots, self.device, self.dtype)

    # ---------------------------------------------------------------------------------------- latent pass
    def forward_embedding(
        self, text_ids: Sequence[int] | Tensor, spk_latent: Tensor, emovec: Tensor, codes: Tensor
    ) -> Tensor:
        """Teacher-forced input of upstream ``UnifiedVoice.forward``: [conds; 0, text, 1; 8192, codes, 8193].

        Text ids are NOT filtered here (upstream only filters in the generation prefix); mel rows use the
        training positions 0..n+1.
        """
        c = self.cfg
        ids = _as_id_tensor(text_ids, self.device)
        mel = torch.cat([codes.new_tensor([c.start_mel_token]), codes, codes.new_tensor([c.stop_mel_token])])
        if mel.numel() > self.mel_pos_embedding.emb.num_embeddings:
            raise ValueError(f"too many mel codes for the latent pass: {codes.numel()}")
        mel_emb = self.mel_embedding(mel) + self.mel_pos_embedding(torch.arange(mel.numel(), device=mel.device))
        return torch.cat([self.conds(spk_latent, emovec), self._text_embedding(ids), mel_emb.unsqueeze(0)], dim=1)

    def latent(
        self, text_ids: Sequence[int] | Tensor, spk_latent: Tensor, emovec: Tensor, codes: Sequence[int] | Tensor
    ) -> Tensor:
        """GPT latents for s2mel [1, n, model_dim] (float32): final_norm'd hidden rows of [8192, c_0 .. c_(n-2)].

        ``codes`` are the generated codes; anything from the first stop token on is dropped (as infer_v2 does).
        """
        codes_t = _as_id_tensor(codes, self.device)
        stops = (codes_t == self.cfg.stop_mel_token).nonzero()
        if stops.numel():
            codes_t = codes_t[: int(stops[0, 0])]
        n = codes_t.numel()
        emb = self.forward_embedding(text_ids, spk_latent, emovec, codes_t)
        hidden = self.gpt(emb)
        mel_rows = self.final_norm(hidden[:, -(n + 2) :])
        return mel_rows[:, :n].float()
