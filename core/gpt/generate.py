"""Our own decode loop for UnifiedVoice: greedy, sampling, beam search and beam sampling.

It reproduces what upstream gets from its vendored HF ``generate`` (``indextts/gpt/transformers_generation_utils.py``
with transformers 4.52 logits processors and ``BeamSearchScorer``):

* the prompt is ``[conds; text]`` followed by the start mel token at mel position 0; the k-th generated token
  (k >= 1) is fed at mel position k + 1 (upstream's off-by-one, position 1 is never used);
* the repetition penalty sees upstream's fake prompt ids (1 and the start mel token) as previous tokens;
* num_beams == 1: processors on the raw logits (min_tokens_to_keep 1), argmax or one multinomial draw;
* num_beams > 1: processors on ``log_softmax`` (min_tokens_to_keep 2), plus the running beam score, flattened
  beam-major; top 2*beams (beam search) or 2*beams draws without replacement from the joint softmax, sorted
  (beam sampling); then the BeamSearchScorer bookkeeping (stop tokens count only within the first ``beams``
  ranks, done-test against the best candidate of the step, finalize with the running beams).

Speed: one static KV cache, one weight pass per step for all beams, the prompt computed and stored once.
Beams never copy the cache: slot ``j`` of decode position ``p`` holds what beam ``j`` computed at ``p``; each
running beam keeps a lineage mask telling which slot holds its own history, and attention gets the matching
additive mask. A beam reorder only permutes that small bool mask.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from core.api import Cancelled, GenerationSettings
from core.gpt.model import FAKE_PROMPT_ID, UnifiedVoice

_UPSTREAM = GenerationSettings()  # the one place upstream infer()'s defaults are written down


@dataclass
class GenerationConfig:
    """The decoding subset of ``core.api.GenerationSettings`` (same names, same defaults)."""

    do_sample: bool = _UPSTREAM.do_sample
    top_p: float = _UPSTREAM.top_p
    top_k: int = _UPSTREAM.top_k
    temperature: float = _UPSTREAM.temperature
    num_beams: int = _UPSTREAM.num_beams
    repetition_penalty: float = _UPSTREAM.repetition_penalty
    length_penalty: float = _UPSTREAM.length_penalty
    max_mel_tokens: int = _UPSTREAM.max_mel_tokens

    @classmethod
    def from_settings(cls, settings: Any) -> GenerationConfig:
        """Take the matching fields from any settings object (e.g. GenerationSettings); others keep defaults."""
        if isinstance(settings, GenerationConfig):
            return settings
        if settings is None:
            return cls()
        if isinstance(settings, dict):
            values = {f.name: settings[f.name] for f in fields(cls) if f.name in settings}
        else:
            values = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        return cls(**values)

    def validate(self, max_mel_tokens_limit: int) -> None:
        problems = []
        if self.num_beams < 1:
            problems.append(f"num_beams must be >= 1 (got {self.num_beams})")
        if self.max_mel_tokens < 1 or self.max_mel_tokens > max_mel_tokens_limit:
            problems.append(f"max_mel_tokens must be in 1..{max_mel_tokens_limit} (got {self.max_mel_tokens})")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0 (got {self.repetition_penalty})")
        if self.do_sample:
            if self.temperature <= 0:
                problems.append(f"temperature must be > 0 (got {self.temperature})")
            if not 0.0 < self.top_p <= 1.0:
                problems.append(f"top_p must be in (0, 1] (got {self.top_p})")
            if self.top_k < 0:
                problems.append(f"top_k must be >= 0 (got {self.top_k})")
        if problems:
            raise ValueError("invalid generation settings: " + "; ".join(problems))


class Generated(NamedTuple):
    codes: Tensor  # [n] int64 on the CPU, cut before the first stop token
    hit_max: bool  # True when max_mel_tokens ended the decode (no stop token)


@dataclass
class DecodeTrace:
    """Optional per-step record for parity tests and debugging."""

    step_logits: list[Tensor] = field(default_factory=list)  # raw float logits [beams, V] of each step
    top_scores: list[Tensor] = field(default_factory=list)  # beam: the 2*beams candidate scores, sorted
    top_tokens: list[Tensor] = field(default_factory=list)
    top_beams: list[Tensor] = field(default_factory=list)
    next_scores: list[Tensor] = field(default_factory=list)  # beam: running beam scores after the step
    next_tokens: list[Tensor] = field(default_factory=list)
    next_sources: list[Tensor] = field(default_factory=list)
    sequence_score: float | None = None
    step_times: list[float] = field(default_factory=list)  # perf_counter() when each step's logits were ready


# ------------------------------------------------------------------------------------------ logits processing
def apply_repetition_penalty(scores: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """HF RepetitionPenaltyLogitsProcessor: seen ids get ``s * p`` if ``s < 0`` else ``s / p`` (once per id)."""
    if penalty == 1.0:
        return scores
    return torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)


def apply_temperature(scores: Tensor, temperature: float) -> Tensor:
    return scores if temperature == 1.0 else scores / temperature


def apply_top_k(scores: Tensor, top_k: int, min_keep: int) -> Tensor:
    """Keep every score >= the k-th largest (ties kept); others -> -inf."""
    if top_k == 0:
        return scores
    k = min(max(top_k, min_keep), scores.shape[-1])
    threshold = torch.topk(scores, k)[0][..., -1:]
    return scores.masked_fill(scores < threshold, float("-inf"))


def apply_top_p(scores: Tensor, top_p: float, min_keep: int) -> Tensor:
    """HF TopPLogitsWarper: ascending sort, cumulative softmax, drop entries with cumsum <= 1 - top_p."""
    if top_p >= 1.0:
        return scores
    sorted_scores, sorted_idx = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -min_keep:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def process_scores(
    scores: Tensor, seen: Tensor, cfg: GenerationConfig, min_keep: int, trace: dict[str, Tensor] | None = None
) -> Tensor:
    """Upstream's processor chain in order: repetition penalty, then (sampling only) temperature, top-k, top-p."""
    scores = apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
    if trace is not None:
        trace["after_repetition_penalty"] = scores
    if cfg.do_sample:
        scores = apply_temperature(scores, cfg.temperature)
        if trace is not None:
            trace["after_temperature"] = scores
        scores = apply_top_k(scores, cfg.top_k, min_keep)
        if trace is not None:
            trace["after_top_k"] = scores
        scores = apply_top_p(scores, cfg.top_p, min_keep)
        if trace is not None:
            trace["after_top_p"] = scores
    return scores


def initial_seen(model: UnifiedVoice, rows: int) -> Tensor:
    """Ids the repetition penalty treats as already present: upstream's fake prompt ids (1) and the start token."""
    seen = torch.zeros(rows, model.cfg.number_mel_codes, dtype=torch.bool, device=model.device)
    seen[:, FAKE_PROMPT_ID] = True
    seen[:, model.cfg.start_mel_token] = True
    return seen


# ------------------------------------------------------------------------------------------ beam bookkeeping
class BeamHypotheses:
    """The finished-hypothesis set of HF's BeamSearchScorer (batch 1)."""

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.beams: list[tuple[float, Tensor]] = []
        self.worst_score = 1e9

    def _score(self, sum_logprobs: float, generated_len: int) -> float:
        if self.length_penalty == 0.0:
            return sum_logprobs  # x / n**0 (upstream's default length_penalty 0)
        return sum_logprobs / (max(generated_len, 1) ** self.length_penalty)

    def add(self, tokens: Tensor, sum_logprobs: float, generated_len: int) -> None:
        score = self._score(sum_logprobs, generated_len)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, generated_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= self._score(best_sum_logprobs, generated_len)

    def best(self) -> tuple[float, Tensor]:
        return sorted(self.beams, key=lambda b: b[0])[-1]


# --------------------------------------------------------------------------------------------- decode loops
def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


@torch.inference_mode()
def generate(
    model: UnifiedVoice,
    text_ids: Any,
    spk_latent: Tensor,
    emovec: Tensor,
    settings: Any = None,
    *,
    generator: torch.Generator | None = None,
    cancel: threading.Event | None = None,
    trace: DecodeTrace | None = None,
    callback: Callable[[int], None] | None = None,
    lang: int | None = None,
) -> Generated:
    """Decode mel codes for one text segment (batch 1). ``lang``: the lang_embedding row (IndexTTS-2.5 only).

    ``callback(code)`` (one beam only) receives every code of the result as soon as it is drawn, in order, before
    the next step runs (the stop token is not passed; the returned codes are exactly those passed). It runs inside
    the decode: whatever it does delays the next step, and an exception from it ends the decode."""
    cfg = GenerationConfig.from_settings(settings)
    cfg.validate(model.cfg.max_mel_tokens)
    if callback is not None and cfg.num_beams != 1:
        raise ValueError(f"a per-step callback needs num_beams == 1 (the final beam is known only at the end), "
                         f"got {cfg.num_beams}")
    prompt = model.prompt_embedding(text_ids, spk_latent, emovec, lang)  # checks the ids' shape first
    start = model.mel_input(torch.tensor([model.cfg.start_mel_token], device=model.device), 0).unsqueeze(0)
    prompt = torch.cat([prompt, start], dim=1)  # [1, P + 1, D]
    if cfg.num_beams == 1:
        return _decode_single(model, prompt, cfg, generator, cancel, trace, callback)
    return _decode_beams(model, prompt, cfg, generator, cancel, trace)


def _decode_single(
    model: UnifiedVoice,
    prompt: Tensor,
    cfg: GenerationConfig,
    generator: torch.Generator | None,
    cancel: threading.Event | None,
    trace: DecodeTrace | None,
    callback: Callable[[int], None] | None = None,
) -> Generated:
    stop = model.cfg.stop_mel_token
    p1 = prompt.shape[1]
    cache = model.new_cache(p1, cfg.max_mel_tokens, slots=1)
    _check_cancel(cancel)
    logits = model.mel_logits(model.gpt.prefill(prompt, cache))  # [1, V]
    seen = initial_seen(model, 1)
    tokens: list[int] = []
    for s in range(cfg.max_mel_tokens):
        if trace is not None:
            trace.step_times.append(time.perf_counter())
            trace.step_logits.append(logits.cpu())
        scores = process_scores(logits, seen, cfg, min_keep=1)
        if cfg.do_sample:
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[0]
        else:
            token = scores.argmax(dim=-1)
        tok = int(token)
        tokens.append(tok)
        if tok == stop:
            return Generated(torch.tensor(tokens[:-1], dtype=torch.long), False)
        if callback is not None:
            callback(tok)
        if s + 1 == cfg.max_mel_tokens:
            break
        _check_cancel(cancel)
        seen[0, tok] = True
        hidden = model.gpt.step(model.mel_input(token, s + 2), cache, p1 + s, None)
        logits = model.mel_logits(hidden)
    return Generated(torch.tensor(tokens, dtype=torch.long), True)


def _decode_beams(
    model: UnifiedVoice,
    prompt: Tensor,
    cfg: GenerationConfig,
    generator: torch.Generator | None,
    cancel: threading.Event | None,
    trace: DecodeTrace | None,
) -> Generated:
    device = model.device
    beams = cfg.num_beams
    vocab = model.cfg.number_mel_codes
    stop = model.cfg.stop_mel_token
    p1 = prompt.shape[1]
    cache = model.new_cache(p1, cfg.max_mel_tokens, slots=beams)
    rows = torch.arange(beams, device=device)
    # lineage[j, g, s]: beam j's token of decode step g (cache position p1 + g) lives in slot s.
    # The prompt is computed once and visible to every beam.
    lineage = torch.zeros(beams, cfg.max_mel_tokens, beams, dtype=torch.bool, device=device)
    bias = torch.zeros(beams, p1 + cfg.max_mel_tokens * beams, dtype=model.dtype, device=device)

    _check_cancel(cancel)
    logits = model.mel_logits(model.gpt.prefill(prompt, cache)).expand(beams, vocab)
    seen = initial_seen(model, beams)
    beam_scores = torch.full((beams,), -1e9, dtype=torch.float32, device=device)
    beam_scores[0] = 0.0
    history = torch.empty(beams, 0, dtype=torch.long, device=device)
    hyps = BeamHypotheses(beams, cfg.length_penalty)
    n_candidates = 2 * beams
    done = False
    for s in range(cfg.max_mel_tokens):
        if trace is not None:
            trace.step_times.append(time.perf_counter())
            trace.step_logits.append(logits.cpu())
        scores = process_scores(F.log_softmax(logits, dim=-1), seen, cfg, min_keep=2)
        flat = (scores + beam_scores[:, None]).view(1, beams * vocab)
        if cfg.do_sample:
            picks = torch.multinomial(flat.softmax(dim=-1), n_candidates, generator=generator)
            cand_scores, order = torch.sort(flat.gather(1, picks), descending=True, dim=1)
            picks = picks.gather(1, order)
        else:
            cand_scores, picks = torch.topk(flat, n_candidates, dim=1)
        cand_scores, picks = cand_scores[0], picks[0]
        cand_beams = (picks // vocab).tolist()
        cand_tokens = (picks % vocab).tolist()

        generated_len = s + 1  # new tokens including this step's (HF: cur_len - prompt_len)
        new_scores: list[Tensor] = []
        new_tokens: list[int] = []
        new_sources: list[int] = []
        for rank, (b, tok) in enumerate(zip(cand_beams, cand_tokens)):
            if tok == stop:
                if rank < beams:  # a stop ranked beyond num_beams is skipped
                    hyps.add(history[b].clone(), float(cand_scores[rank]), generated_len)
            else:
                new_scores.append(cand_scores[rank])
                new_tokens.append(tok)
                new_sources.append(b)
            if len(new_tokens) == beams:
                break
        done = hyps.is_done(float(cand_scores.max()), generated_len)

        src = torch.tensor(new_sources, device=device)
        tok_t = torch.tensor(new_tokens, device=device)
        beam_scores = torch.stack(new_scores)
        history = torch.cat([history[src], tok_t[:, None]], dim=1)
        if trace is not None:
            trace.top_scores.append(cand_scores.cpu())
            trace.top_tokens.append(torch.tensor(cand_tokens))
            trace.top_beams.append(torch.tensor(cand_beams))
            trace.next_scores.append(beam_scores.cpu())
            trace.next_tokens.append(tok_t.cpu())
            trace.next_sources.append(src.cpu())
        if done or s + 1 == cfg.max_mel_tokens:
            break
        _check_cancel(cancel)
        seen = seen[src]
        seen[rows, tok_t] = True
        lineage[:, :s] = lineage[src, :s]
        lineage[rows, s, rows] = True
        n = p1 + (s + 1) * beams
        visible = lineage[:, : s + 1].reshape(beams, (s + 1) * beams)
        step_bias = bias[:, :n]
        step_bias[:, p1:] = 0
        step_bias[:, p1:].masked_fill_(~visible, float("-inf"))
        hidden = model.gpt.step(model.mel_input(tok_t, s + 2), cache, p1 + s, step_bias)
        logits = model.mel_logits(hidden)

    if not done:
        for j in range(beams):
            hyps.add(history[j].clone(), float(beam_scores[j]), history.shape[1])
    score, best = hyps.best()
    if trace is not None:
        trace.sequence_score = score
    best = best.cpu()
    hit_max = best.numel() >= cfg.max_mel_tokens  # shorter winners get the stop token appended upstream
    return Generated(best, hit_max)
