"""Streaming inside a segment: render the speech codes in chunks while the GPT is still decoding them.

The decode loop hands every new code to a :class:`SegmentStreamer` (``generate(..., callback=streamer.push)``).
When enough codes have arrived it renders the next chunk (GPT latent -> length regulator -> CFM with the voice's
prompt -> BigVGAN) and passes the samples that are final to the caller; at the stop token it renders the rest.

Sample bookkeeping, on the global grid of one segment (``F(c) = int(float32(c) * 1.72)``, the mel frames the
non-streamed render gives ``c`` codes; frame ``f`` is samples ``[hop * f, hop * (f + 1))``):

* chunk ``k`` covers the codes ``[a_k, b_k)``: ``a_0 = 0``, ``a_k = b_(k-1) - overlap``, and
  ``b_k - a_k = plan.length(k)`` (first chunk small, then growing up to ``max_codes``); the last chunk ends at the
  final code ``n`` (or is not needed when ``n == b_(k-1)``);
* it is rendered to the frames ``[F(a_k), F(b_k))``, i.e. the samples ``[hop * F(a_k), hop * F(b_k))``;
* the join of chunks ``k - 1`` and ``k`` is the samples ``[hop * F(a_k), hop * F(b_(k-1)))``, both chunks render
  them: the output there is ``old * (1 - w) + new * w`` with the Hann half ``w[j] = sin^2(pi (j + 1/2) / (2 L))``
  over the join's ``L`` samples (``w`` and ``1 - w`` sum to one); every other sample comes from one chunk as is.

So a segment of ``n`` codes has exactly ``hop * F(n)`` samples, the length of the non-streamed render of the same
codes. A chunk's samples are passed on as soon as they are final: all but the part the next chunk fades into.

What a chunk computes, and why (seams):

* GPT latent: the teacher-forced second GPT pass over *all codes so far*, rows ``[a_k, b_k)``. That pass is causal,
  so these rows are the ones the non-streamed pass computes for the same codes (same values up to float rounding);
  a pass over the chunk alone would lose the context and change them, and the decode's own hidden states are not
  them either (other mel positions, filtered text ids). :class:`LatentRows` runs it incrementally (cached keys and
  values), so a segment costs one pass over its codes however many chunks it has.
* Length regulator over the content of all codes so far to ``F(b_k)`` frames, frames ``[F(a_k), F(b_k))`` kept: its
  convolutions see the real left context and its GroupNorm pools over all codes so far, as close to the full
  render as the codes known allow (only the last few frames, which the next chunk's fade takes over, lack their
  right context).
* CFM with the voice's cached prompt (``ref_mel`` / ``prompt_condition``; with ``plan.prompt_seconds`` only their
  last seconds, see :class:`StreamPlan`) and the segment's noise at the same global frames for every chunk
  (:class:`SegmentNoise`), so two chunks start the diffusion from the same noise over their join.
* BigVGAN on the chunk's frames.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .api import STREAM_BEAMS_WARNING as STREAM_BEAMS_WARNING  # re-exported: the engine's warning
from .api import GenerationSettings
from .s2mel.length_regulator import mel_frames_for_codes

if TYPE_CHECKING:
    from .gpt.model import GPT2Block, UnifiedVoice
    from .pipeline import Pipeline
    from .voice_cache import Voice


@functools.lru_cache(maxsize=4096)
def frames_for_codes(codes: int) -> int:
    """Mel frames of the non-streamed render of ``codes`` codes (float32 product, as the engine and upstream)."""
    return int(mel_frames_for_codes(torch.tensor([codes])))


@dataclass(frozen=True)
class StreamPlan:
    """How a segment is cut into chunks (in speech codes, 50 per second of audio).

    ``prompt_seconds``: each chunk's diffusion reads only the last ``prompt_seconds`` of the voice's reference as its
    prompt (``None``: the whole reference, as the non-streamed render). The diffusion runs over prompt + chunk
    frames, so with a 10 s reference and small chunks the prompt is most of every chunk's cost: on a CPU the full
    prompt makes a 24-code first chunk cost nearly as much as a whole 2 s segment, and every chunk costs it again.
    """

    first_codes: int = 24
    growth: float = 2.0
    max_codes: int = 100
    overlap_codes: int = 4
    prompt_seconds: float | None = 3.0

    def __post_init__(self) -> None:
        if self.overlap_codes < 0 or self.first_codes < max(1, 2 * self.overlap_codes):
            raise ValueError(f"stream plan: first_codes ({self.first_codes}) must be at least 1 and twice "
                             f"overlap_codes ({self.overlap_codes})")
        if self.growth < 1.0 or self.max_codes < self.first_codes:
            raise ValueError(f"stream plan: growth ({self.growth}) must be >= 1 and max_codes ({self.max_codes}) "
                             f">= first_codes ({self.first_codes})")
        if self.prompt_seconds is not None and not self.prompt_seconds > 0:
            raise ValueError(f"stream plan: prompt_seconds must be > 0 or None, got {self.prompt_seconds}")

    def length(self, k: int) -> int:
        """Codes in chunk ``k`` (overlap included) unless the segment ends first."""
        return min(self.max_codes, int(self.first_codes * self.growth ** min(k, 64)))

    def windows(self, n: int) -> list[tuple[int, int]]:
        """The chunks ``(a, b)`` a segment of ``n`` codes is rendered in (what :class:`SegmentStreamer` does)."""
        out: list[tuple[int, int]] = []
        a, k = 0, 0
        while n > 0:
            b = a + self.length(k)
            if b >= n:
                if not out or n > out[-1][1]:
                    out.append((a, n))
                return out
            out.append((a, b))
            a, k = b - self.overlap_codes, k + 1
        return out

    def prompt_frames(self, ref_frames: int, frames_per_second: float) -> int:
        if self.prompt_seconds is None:
            return ref_frames
        return max(1, min(ref_frames, round(self.prompt_seconds * frames_per_second)))


def hann_in(n: int) -> np.ndarray:
    """The fade-in weights of a join of ``n`` samples: ``sin^2(pi (j + 1/2) / (2 n))``, float32."""
    return (np.sin(np.pi * (np.arange(n) + 0.5) / (2 * n)) ** 2).astype(np.float32)


def crossfade(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``old`` faded out and ``new`` faded in over their common length (the two weights sum to one)."""
    w = hann_in(old.size)
    return old * (1.0 - w) + new * w


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 as the engine converts: ``32767 x`` clamped to +-32767, truncated."""
    return np.clip(np.float32(32767.0) * wav.astype(np.float32), -32767.0, 32767.0).astype(np.int16)


Render = Callable[[list[int], int, int], np.ndarray]
"""``render(codes, a, b)``: float samples of the frames ``[F(a), F(b))`` given the codes so far (``len >= b``)."""


class SegmentStreamer:
    """The chunker of one segment: :meth:`push` every code as it is decoded, :meth:`finish` after the last one.

    ``emit(samples, last)`` receives float samples as soon as they are final; in order, they make the whole segment
    (``hop * F(n)`` samples for ``n`` codes)."""

    def __init__(self, plan: StreamPlan, render: Render, emit: Callable[[np.ndarray, bool], None], hop: int) -> None:
        self.plan, self.render, self.emit, self.hop = plan, render, emit, hop
        self.codes: list[int] = []
        self.chunks = 0  # chunks rendered so far
        self.start = 0  # first code of the next chunk
        self.end = plan.length(0)  # code count that triggers the next chunk
        self.held = np.zeros(0, dtype=np.float32)  # samples of the last chunk the next one fades into
        self.done = False

    @property
    def rendered(self) -> int:
        """Codes covered by the chunks rendered so far."""
        return self.start + self.plan.overlap_codes if self.chunks else 0

    def push(self, code: int) -> None:
        if self.done:
            raise RuntimeError("SegmentStreamer.push after finish")
        self.codes.append(int(code))
        if len(self.codes) == self.end:
            self._chunk(self.start, self.end, last=False)

    def finish(self) -> None:
        """The decode ended: render the codes no chunk covered yet, or pass on what was held back."""
        if self.done:
            return
        self.done = True
        n = len(self.codes)
        if n > self.rendered:
            self._chunk(self.start if self.chunks else 0, n, last=True)
        else:
            self.emit(self.held, True)
            self.held = np.zeros(0, dtype=np.float32)

    def _chunk(self, a: int, b: int, last: bool) -> None:
        hop = self.hop
        audio = np.asarray(self.render(self.codes, a, b), dtype=np.float32).reshape(-1)
        expected = hop * (frames_for_codes(b) - frames_for_codes(a))
        if audio.size != expected:
            raise RuntimeError(f"stream chunk [{a}, {b}) rendered {audio.size} samples, expected {expected}")
        join = self.held.size  # == hop * (F(b_prev) - F(a)) by construction
        keep = 0 if last else hop * (frames_for_codes(b) - frames_for_codes(b - self.plan.overlap_codes))
        head = crossfade(self.held, audio[:join]) if join else audio[:0]
        out = np.concatenate([head, audio[join:audio.size - keep]])
        self.held = audio[audio.size - keep:].copy()
        self.chunks += 1
        self.start, self.end = b - self.plan.overlap_codes, b - self.plan.overlap_codes + self.plan.length(self.chunks)
        self.emit(out, last)


class LatentRows:
    """The GPT latent rows of a segment's codes, computed as the codes arrive: upstream's teacher-forced second pass
    (:meth:`UnifiedVoice.latent`) run incrementally, its keys/values kept per layer and extended by each chunk's new
    codes. That pass is causal, so row ``k`` (the final-normed hidden state at mel input ``k``: the start token for
    ``k = 0``, code ``k - 1`` after) is the full pass's row ``k`` (up to float rounding), and a segment costs one
    pass over its codes however many chunks it has."""

    def __init__(self, gpt: UnifiedVoice, text_ids: list[int], spk_latent: Tensor, emovec: Tensor) -> None:
        self.gpt = gpt
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        empty = torch.zeros(0, dtype=torch.long, device=gpt.device)
        prefix = gpt.forward_embedding(text_ids, spk_latent, emovec, empty)[:, :-1]  # [conds; text; start mel]
        self.rows = self._extend(prefix)[:, -1:]  # row 0: the start token's
        self.fed = 0  # codes fed so far

    def upto(self, codes: list[int], b: int) -> Tensor:
        """Rows ``[0, b)`` [1, b, D] float32 (they need the codes ``[0, b - 1)``)."""
        if b - 1 > self.fed:
            new = torch.tensor(codes[self.fed:b - 1], dtype=torch.long, device=self.gpt.device)
            positions = torch.arange(self.fed + 1, b, device=new.device)  # code k sits at mel position k + 1
            x = (self.gpt.mel_embedding(new) + self.gpt.mel_pos_embedding(positions)).unsqueeze(0)
            self.rows = torch.cat([self.rows, self._extend(x)], dim=1)
            self.fed = b - 1
        return self.rows[:, :b].float()

    def _extend(self, x: Tensor) -> Tensor:
        """Run the rows ``x`` [1, T, D] after those already cached; their final_norm'd outputs [1, T, D]."""
        blocks = cast("list[GPT2Block]", list(self.gpt.gpt.h))
        t = x.shape[1]
        past = self.keys[0].shape[2] if self.keys else 0
        visible = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        for i, block in enumerate(blocks):
            attn = block.attn
            q, k, v = (y.transpose(1, 2) for y in attn.c_attn(block.ln_1(x)).view(
                1, t, 3, attn.heads, attn.head_dim).unbind(2))  # [1, H, T, hd]
            if len(self.keys) < len(blocks):
                self.keys.append(k)
                self.values.append(v)
            else:
                self.keys[i] = torch.cat([self.keys[i], k], dim=2)
                self.values[i] = torch.cat([self.values[i], v], dim=2)
            out = F.scaled_dot_product_attention(q, self.keys[i], self.values[i], attn_mask=visible)
            x = x + attn.c_proj(out.transpose(1, 2).reshape(1, t, -1))
            x = x + block.mlp(block.ln_2(x))
        return self.gpt.final_norm(self.gpt.gpt.ln_f(x))


class SegmentNoise:
    """The diffusion noise of one segment on its global frame grid, drawn frame by frame (frame-major) as chunks
    need it, so that every chunk covering a frame starts from the same noise there."""

    def __init__(self, channels: int, device: torch.device, seed: int) -> None:
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.channels, self.device = channels, device
        self.frames = torch.zeros(0, channels, device=device)

    def __call__(self, lo: int, hi: int) -> Tensor:
        """[1, channels, hi - lo] noise of the target frames ``[lo, hi)``."""
        have = self.frames.shape[0]
        if hi > have:
            more = torch.randn((hi - have, self.channels), generator=self.generator, device=self.device)
            self.frames = torch.cat([self.frames, more])
        return self.frames[lo:hi].t().unsqueeze(0)


@dataclass
class ChunkRenderer:
    """Renders a window of a segment's codes (the :data:`Render` of :class:`SegmentStreamer`) with the engine's
    models; adds its seconds to ``timings`` (``gpt_latent``, ``s2mel``, ``vocoder``)."""

    p: Pipeline
    voice: Voice
    text_ids: list[int]
    emovec: Tensor
    settings: GenerationSettings
    plan: StreamPlan
    noise: Callable[[int, int], Tensor]  # (lo, hi) target frames -> [1, 80, hi - lo]
    cancel: threading.Event | None = None
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # total time spent rendering (the decode's own time is the rest)

    def __post_init__(self) -> None:
        t = time.perf_counter()
        with torch.inference_mode():
            self.latents = LatentRows(self.p.gpt, self.text_ids, self.voice.spk_latent, self.emovec)
        self.seconds += self._clock("gpt_latent", t) - t
        spec = self.p.cfg.require("s2mel").preprocess_params
        ref_frames = self.voice.ref_mel.shape[-1]
        n = self.plan.prompt_frames(ref_frames, spec.sr / spec.spect_params.hop_length)
        self.prompt_mel = self.voice.ref_mel[..., ref_frames - n:]
        self.prompt_condition = self.voice.prompt_condition[:, ref_frames - n:]

    def _clock(self, key: str, t: float) -> float:
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + now - t
        return now

    @torch.inference_mode()
    def __call__(self, codes: list[int], a: int, b: int) -> np.ndarray:
        from .pipeline import content_condition

        p, v, s = self.p, self.voice, self.settings
        t0 = t = time.perf_counter()
        known = torch.tensor(codes[:b], dtype=torch.long, device=p.device)
        latent = self.latents.upto(codes, b)
        t = self._clock("gpt_latent", t)
        fa, fb = frames_for_codes(a), frames_for_codes(b)
        cond = p.s2mel.length_regulator(content_condition(p, known, latent), fb)[:, fa:]
        mu = torch.cat([self.prompt_condition, cond], dim=1)
        prompt_len = self.prompt_mel.shape[-1]
        noise = torch.cat([torch.zeros(1, self.prompt_mel.shape[1], prompt_len, device=p.device),
                           self.noise(fa, fb).to(p.device)], dim=-1)
        mel = p.s2mel.cfm.inference(
            mu, torch.tensor([mu.shape[1]], device=p.device), self.prompt_mel, v.style, steps=s.diffusion_steps,
            cfg_rate=s.cfg_rate, noise=noise, cancel=self.cancel, fast=s.fast,
        )[:, :, prompt_len:]
        t = self._clock("s2mel", t)
        wav = p.vocoder(mel.float()).reshape(-1).float().cpu().numpy()
        self._clock("vocoder", t)
        self.seconds += time.perf_counter() - t0
        return wav


