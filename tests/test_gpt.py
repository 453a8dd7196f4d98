"""Parity of core.gpt (UnifiedVoice v2) with the upstream goldens in <reference>/gpt (see its README)."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from reference import ref
from safetensors.torch import load_file

from core.api import Cancelled
from core.checkpoints import CheckpointError
from core.config import load_config
from core.gpt import DecodeTrace, GenerationConfig, UnifiedVoice
from core.gpt.emotion import EmotionMatrices, blend_emovec, normalize_emo_vec, scale_emo_weights
from core.gpt.generate import generate, initial_seen, process_scores
from core.gpt.model import FAKE_PROMPT_ID


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    """README tolerance: |got - want| <= rel * max(1, |want|) elementwise."""
    got = got.detach().float().cpu()
    want = want.float()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != golden {tuple(want.shape)}"
    bound = rel * want.abs().clamp(min=1.0)
    diff = (got - want).abs()
    assert bool((diff <= bound).all()), f"{name}: max |diff| {diff.max().item():.3e} (allowed {rel} * max(1, |ref|))"


def assert_scores(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """logits_processing tolerance: -inf sets identical, finite entries rel 1e-6 (abs 1e-5)."""
    got = got.detach().float().cpu()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.equal(torch.isinf(got), torch.isinf(want)), f"{name}: filtered (-inf) entries differ"
    finite = torch.isfinite(want)
    diff = (got[finite] - want[finite]).abs()
    bound = torch.maximum(torch.full_like(diff, 1e-5), 1e-6 * want[finite].abs())
    assert bool((diff <= bound).all()), f"{name}: max |diff| {diff.max().item():.3e}"


@pytest.fixture(scope="module")
def cfg():
    return load_config(ref("gpt", "config.yaml"))


@pytest.fixture(scope="module")
def model(cfg):
    return UnifiedVoice.from_checkpoint(ref("gpt", cfg.gpt_checkpoint), cfg.gpt)


@pytest.fixture(scope="module")
def meta():
    return json.loads(ref("gpt", "meta.json").read_text(encoding="utf-8"))


def _golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(ref("gpt", f"{name}.safetensors")))


@pytest.fixture(scope="module")
def inputs():
    return _golden("inputs")


@pytest.fixture(scope="module")
def gen():
    return _golden("generation")


@pytest.fixture(scope="module")
def lat():
    return _golden("latent")


def _case_inputs(meta, gen, case: str):
    """(text ids, speaker latent, emovec) of one generation case: its own emovec if stored, else greedy's."""
    info = meta["generation"][case]
    text = meta["texts"][info["text"]]["ids"]
    emovec = gen.get(f"{case}.emovec", gen["greedy.emovec"])
    return text, gen["greedy.speech_conditioning_latent"], emovec


def _stop_step(meta, model) -> int:
    """Decode step at which the tiny GPT of this set emits its built-in stop token (from the golden codes).

    Every golden decode of a set stops at the same step (the stop is tied to a mel position); the step differs
    between sets, so tests that cap max_mel_tokens keep the cap at or below it.
    """
    stop = model.cfg.stop_mel_token
    steps = []
    for info in meta["generation"].values():
        codes = list(info["codes"])
        steps.append(codes.index(stop) if stop in codes else len(codes))
        if "first_step_with_stop_in_top3" in info:
            steps.append(int(info["first_step_with_stop_in_top3"]))
    return min(steps)


def _case_settings(info: dict, limit: int) -> GenerationConfig:
    return GenerationConfig(
        do_sample=False,
        num_beams=int(info.get("num_beams", 1)),
        repetition_penalty=float(info.get("repetition_penalty", 1.0)),
        length_penalty=float(info.get("length_penalty", 0.0)),
        max_mel_tokens=int(info.get("max_generate_length", limit)),
    )


# ------------------------------------------------------------------------------------------------ conditioning
def test_speaker_conditioning_intermediates(model, inputs):
    golden = _golden("conditioning")
    trace: dict[str, torch.Tensor] = {}
    out = model.get_conditioning(inputs["spk_cond_emb"], trace=trace)
    names = [k for k in golden if k.startswith("spk.")]
    assert names
    for name in names:
        key = name[len("spk.") :]
        assert key in trace, f"no intermediate for golden {name}"
        assert_close(name, trace[key], golden[name])
    assert_close("spk latent", out, golden["spk.perceiver.out"])


def check_emovec_intermediates(model, features: torch.Tensor, golden: dict[str, torch.Tensor], prefix: str) -> None:
    """get_emovec on ``features``: every golden ``<prefix>*`` intermediate and the emotion vector."""
    trace: dict[str, torch.Tensor] = {}
    out = model.get_emovec(features, trace=trace)
    names = [k for k in golden if k.startswith(prefix)]
    assert names
    for name in names:
        key = name[len(prefix) :]
        assert key in trace, f"no intermediate for golden {name}"
        assert_close(name, trace[key], golden[name])
    assert_close(prefix + "emovec", out, golden[prefix + "emo_layer_out"])


@pytest.mark.parametrize("prefix,feature", [("emo.", "emo_cond_emb"), ("base.", "spk_cond_emb")])
def test_emotion_conditioning_intermediates(model, inputs, prefix, feature):
    check_emovec_intermediates(model, inputs[feature], _golden("conditioning"), prefix)


def test_merge_emovec_every_alpha(model, inputs):
    golden = _golden("conditioning")
    names = [k for k in golden if k.startswith("merge_emovec.alpha_")]
    assert names
    for name in names:
        alpha = float(name.split("alpha_", 1)[1])
        got = model.merge_emovec(inputs["spk_cond_emb"], inputs["emo_cond_emb"], alpha)
        assert_close(name, got, golden[name])


def test_masked_conditioning(model, inputs, meta):
    golden = _golden("conditioning")
    lengths = meta["masked_lengths"]
    spk = model.get_conditioning(inputs["spk_cond_emb"], lengths=torch.tensor([lengths["spk"]]))
    assert_close("masked.spk_latent", spk, golden["masked.spk_latent"])
    emo = model.get_emovec(inputs["emo_cond_emb"], lengths=torch.tensor([lengths["emo"]]))
    assert_close("masked.emo_emovec", emo, golden["masked.emo_emovec"])


# -------------------------------------------------------------------------------------------- emotion vectors
def test_emotion_weight_steps(meta):
    golden = _golden("emo_vector")
    info = meta["emo_vector_mode"]
    raw = info["raw"]  # the exact Python doubles (weights.raw is their float32 copy)
    assert torch.equal(torch.tensor(raw, dtype=torch.float32), golden["weights.raw"])
    normalized = normalize_emo_vec(raw)
    assert torch.equal(torch.tensor(normalized, dtype=torch.float32), golden["weights.normalized"])
    if "normalized_bias_and_cap" in info:
        assert normalized == pytest.approx(info["normalized_bias_and_cap"], rel=1e-12, abs=0)
    scaled = scale_emo_weights(normalized, info["emo_alpha"])
    assert torch.equal(torch.tensor(scaled, dtype=torch.float32), golden["weights.alpha_scaled"])
    assert scaled == info["alpha_scaled_truncated"]
    assert scale_emo_weights(normalized, 1.0) == normalized
    assert scale_emo_weights([0.5], 1.7) == [0.5]  # alpha clamps to 1


@pytest.mark.parametrize("which", ["real", "tiny"])
def test_emotion_matrix_mix(cfg, meta, which):
    golden = _golden("emo_vector")
    folder = ("data",) if which == "real" else ("gpt",)
    mats = EmotionMatrices.load(ref(*folder, cfg.spk_matrix), ref(*folder, cfg.emo_matrix), cfg.emo_num)
    style = golden["style"]
    cos = mats.cosine_similarities(style)
    assert_close(f"{which}.cosine_similarities", cos, golden[f"{which}.cosine_similarities"])
    picks = mats.select(style)
    assert picks == golden[f"{which}.indices_in_group"].tolist()
    offsets = torch.tensor([0] + list(cfg.emo_num[:-1])).cumsum(0)
    assert (offsets + torch.tensor(picks)).tolist() == golden[f"{which}.indices_global"].tolist()
    rows = torch.cat([g[i : i + 1] for g, i in zip(mats.emo_groups, picks)])
    assert_close(f"{which}.emo_rows", rows, golden[f"{which}.emo_rows"])
    emovec_mat, weight_sum = mats.mix(golden["weights.alpha_scaled"].tolist(), style)
    assert_close(f"{which}.emovec_mat", emovec_mat, golden[f"{which}.emovec_mat"])
    out = blend_emovec(emovec_mat, weight_sum, golden[f"{which}.emovec_in"])
    assert_close(f"{which}.emovec_out", out, golden[f"{which}.emovec_out"])
    # alpha given to mix() applies infer's truncation itself
    mat2, _ = mats.mix(golden["weights.normalized"].tolist(), style, alpha=meta["emo_vector_mode"]["emo_alpha"])
    assert_close(f"{which}.emovec_mat via alpha", mat2, golden[f"{which}.emovec_mat"])


def test_emotion_matrix_random_and_errors(cfg):
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    mats = EmotionMatrices.load(ref("gpt", cfg.spk_matrix), ref("gpt", cfg.emo_matrix), cfg.emo_num)
    a, b = mats.select(None, True, g1), mats.select(None, True, g2)
    assert a == b and all(0 <= i < n for i, n in zip(a, cfg.emo_num))
    with pytest.raises(CheckpointError, match="emo_num"):
        EmotionMatrices.load(ref("gpt", cfg.spk_matrix), ref("gpt", cfg.emo_matrix), list(cfg.emo_num[:-1]))


# ------------------------------------------------------------------------------------------------- generation
def test_prompt_embedding_and_fake_ids(model, meta, gen):
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    assert_close("greedy.cached_mel_emb", model.prompt_embedding(text, spk, emovec), gen["greedy.cached_mel_emb"])
    ids = gen["greedy.prompt_input_ids"][0]
    assert bool((ids[:-1] == FAKE_PROMPT_ID).all()) and int(ids[-1]) == model.cfg.start_mel_token
    assert bool((gen["greedy.prompt_attention_mask"] == 1).all())
    # start/stop text ids inside the text are dropped from the generation prefix
    dirty = [model.cfg.start_text_token] + list(text[:3]) + [model.cfg.stop_text_token] + list(text[3:])
    assert torch.equal(model.prompt_embedding(dirty, spk, emovec), model.prompt_embedding(text, spk, emovec))


def test_every_generation_case_matches(model, meta, gen):
    """Greedy / repetition penalty / beam search codes token for token; beam steps exactly as upstream."""
    stop = model.cfg.stop_mel_token
    assert meta["generation"]
    for case, info in meta["generation"].items():
        text, spk, emovec = _case_inputs(meta, gen, case)
        settings = _case_settings(info, model.cfg.max_mel_tokens)
        trace = DecodeTrace()
        codes, hit_max = generate(model, text, spk, emovec, settings, trace=trace)
        check_decode(case, codes, hit_max, trace, gen, stop)


def check_decode(case: str, codes: torch.Tensor, hit_max: bool, trace: DecodeTrace, gen: dict[str, torch.Tensor],
                 stop: int) -> None:
    """One decode against generation case ``case``: codes, stop, step logits and (beam) every step's tables."""
    want = gen[f"{case}.codes"][0]
    ended = bool(want[-1] == stop)
    expected_codes = want[:-1] if ended else want
    assert codes.tolist() == expected_codes.tolist(), f"{case}: codes differ"
    assert hit_max == (not ended)
    if f"{case}.step_logits" in gen:
        got = torch.cat([s[:1] for s in trace.step_logits])
        diff = (got - gen[f"{case}.step_logits"]).abs().max().item()
        assert diff <= 5e-4, f"{case}: cached step logits off by {diff:.3e}"
    if f"{case}.step_top6_tokens" in gen:
        n = len(trace.top_tokens)
        assert n == gen[f"{case}.step_top6_tokens"].shape[0], f"{case}: {n} beam steps"
        assert torch.equal(torch.stack(trace.top_tokens), gen[f"{case}.step_top6_tokens"])
        assert torch.equal(torch.stack(trace.top_beams), gen[f"{case}.step_top6_beam"])
        assert torch.equal(torch.stack(trace.next_tokens), gen[f"{case}.step_next_beam_tokens"])
        assert torch.equal(torch.stack(trace.next_sources), gen[f"{case}.step_next_beam_source"])
        assert (torch.stack(trace.top_scores) - gen[f"{case}.step_top6_scores"]).abs().max() <= 1e-4
        assert (torch.stack(trace.next_scores) - gen[f"{case}.step_next_beam_scores"]).abs().max() <= 1e-4
        assert abs(trace.sequence_score - float(gen[f"{case}.sequence_score"])) <= 1e-4


def test_beam_search_capped_before_any_stop(model, meta, gen):
    """max_mel_tokens ends a beam case before any stop reaches the top beams: upstream's finalize adds the running
    beams and returns the best one. The expected codes are rebuilt from the golden's per-step beam tables."""
    stop = model.cfg.stop_mel_token
    beam_cases = [c for c in meta["generation"] if f"{c}.step_top6_tokens" in gen]
    assert beam_cases
    for case in beam_cases:
        beams = int(meta["generation"][case]["num_beams"])
        top = gen[f"{case}.step_top6_tokens"][:, :beams]  # a stop ranked within num_beams finishes a hypothesis
        stop_steps = [s for s in range(top.shape[0]) if bool((top[s] == stop).any())]
        n = min([10] + stop_steps)
        if n == 0:
            continue  # a stop among the top beams at the first step: nothing to cap
        sources, tokens = gen[f"{case}.step_next_beam_source"], gen[f"{case}.step_next_beam_tokens"]
        history: list[list[int]] = [[] for _ in range(sources.shape[1])]
        for s in range(n):
            history = [history[int(b)] + [int(t)] for b, t in zip(sources[s], tokens[s])]
        best = int(gen[f"{case}.step_next_beam_scores"][n - 1].argmax())
        text, spk, emovec = _case_inputs(meta, gen, case)
        settings = _case_settings(meta["generation"][case], model.cfg.max_mel_tokens)
        settings.max_mel_tokens = n
        codes, hit_max = generate(model, text, spk, emovec, settings)
        assert codes.tolist() == history[best], f"{case} capped at {n}"
        assert hit_max


def _decode_positions(n_rows: int) -> list[int]:
    """Mel positions of the start token and the fed-back codes during decoding: 0, 2, 3, ..."""
    return [0] + list(range(2, n_rows + 1))


def test_teacher_forced_pass_matches_cached_decoding(model, meta, gen, lat):
    """Uncached pass with decode positions == golden hidden states == every cached decode step (the seed's bug)."""
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    codes = gen["greedy.codes"][0]
    n_rows = lat["tf.final_norm_out"].shape[1]
    positions = _decode_positions(n_rows)
    assert positions == lat["tf.mel_positions"].tolist()
    tokens = torch.cat([torch.tensor([model.cfg.start_mel_token]), codes[: n_rows - 1]])
    mel = model.mel_embedding(tokens) + model.mel_pos_embedding.emb.weight[positions]
    emb = torch.cat([model.prompt_embedding(text, spk, emovec), mel.unsqueeze(0)], dim=1)
    assert_close("tf.emb_in", emb, lat["tf.emb_in"])
    hidden: list[torch.Tensor] = []
    with torch.inference_mode():
        ln_f = model.gpt(emb, hidden)
    blocks = sorted(k for k in lat if k.startswith("tf.block"))
    assert len(blocks) == len(hidden)
    for i, h in enumerate(hidden):
        assert_close(f"tf.block{i}_out", h, lat[f"tf.block{i}_out"])
    assert_close("tf.ln_f_out", ln_f, lat["tf.ln_f_out"])
    final = model.final_norm(ln_f[:, -n_rows:])
    assert_close("tf.final_norm_out", final, lat["tf.final_norm_out"])
    uncached = model.mel_head(final)[0]
    assert (uncached - gen["greedy.step_logits"]).abs().max() <= 5e-4
    trace = DecodeTrace()
    settings = _case_settings(meta["generation"]["greedy"], model.cfg.max_mel_tokens)
    generate(model, text, spk, emovec, settings, trace=trace)
    cached = torch.cat(trace.step_logits)
    assert cached.shape == uncached.shape
    assert (cached - uncached).abs().max() <= 5e-4


def test_latents_for_every_case(model, meta, gen, lat):
    cases = [k[: -len(".latent")] for k in lat if k.endswith(".latent")]
    assert cases
    stop = model.cfg.stop_mel_token
    for case in cases:
        text, spk, emovec = _case_inputs(meta, gen, case)
        codes = gen[f"{case}.codes"][0]
        cut = codes[: int((codes == stop).nonzero()[0, 0])] if bool((codes == stop).any()) else codes
        assert cut.tolist() == lat[f"{case}.codes_cut"][0].tolist()
        assert_close(f"{case}.latent", model.latent(text, spk, emovec, codes), lat[f"{case}.latent"])


def test_forward_pass_hidden_states(model, meta, gen, lat):
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    cut = lat["greedy.codes_cut"][0]
    emb = model.forward_embedding(text, spk, emovec, cut)
    assert_close("fwd.emb_in", emb, lat["fwd.emb_in"])
    hidden: list[torch.Tensor] = []
    with torch.inference_mode():
        ln_f = model.gpt(emb, hidden)
    for i, h in enumerate(hidden):
        assert_close(f"fwd.block{i}_out", h, lat[f"fwd.block{i}_out"])
    assert_close("fwd.ln_f_out", ln_f, lat["fwd.ln_f_out"])
    n_cond = emb.shape[1] - lat["fwd.final_norm_out"].shape[1]
    assert_close("fwd.final_norm_out", model.final_norm(ln_f[:, n_cond:]), lat["fwd.final_norm_out"])


# ------------------------------------------------------------------------------------------ logits processing
def _seen_from(model, prev_ids: torch.Tensor) -> torch.Tensor:
    seen = torch.zeros(prev_ids.shape[0], model.cfg.number_mel_codes, dtype=torch.bool)
    return seen.scatter(1, prev_ids, True)


def test_sampling_scores_match_upstream_chain(model):
    golden = _golden("logits_processing")
    cfg = GenerationConfig()  # upstream infer defaults: sampling, 3 beams, T 0.8, top-k 30, top-p 0.8, penalty 10
    stages = ["after_repetition_penalty", "after_temperature", "after_top_k", "after_top_p"]

    trace: dict[str, torch.Tensor] = {}
    seen = _seen_from(model, golden["sample.prev_ids"])
    out = process_scores(golden["sample.logits"], seen, cfg, min_keep=1, trace=trace)
    for stage in stages:
        assert_scores(f"sample.{stage}", trace[stage], golden[f"sample.{stage}"])
    assert (out.softmax(-1) - golden["sample.probs"]).abs().max() <= 1e-6

    trace = {}
    logp = torch.log_softmax(golden["beam_sample.logits"], dim=-1)
    assert_scores("beam_sample.log_softmax", logp, golden["beam_sample.log_softmax"])
    out = process_scores(logp, _seen_from(model, golden["beam_sample.prev_ids"]), cfg, min_keep=2, trace=trace)
    for stage in stages:
        assert_scores(f"beam_sample.{stage}", trace[stage], golden[f"beam_sample.{stage}"])
    flat = (out + golden["beam_sample.beam_scores"][:, None]).view(1, -1)
    assert_scores("beam_sample.combined_flat", flat, golden["beam_sample.combined_flat"])
    assert (flat.softmax(-1) - golden["beam_sample.probs_flat"]).abs().max() <= 1e-6


def test_initial_seen_ids_are_upstream_fake_prompt(model, gen):
    seen = initial_seen(model, 1)[0]
    assert sorted(seen.nonzero()[:, 0].tolist()) == sorted(set(gen["greedy.prompt_input_ids"][0].tolist()))


# -------------------------------------------------------------------------------------- sampling and misc
@pytest.mark.parametrize("beams", [1, 3])
def test_sampling_is_reproducible_with_a_seed(model, meta, gen, beams):
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    settings = GenerationConfig(do_sample=True, num_beams=beams, max_mel_tokens=12)
    runs = [
        generate(model, text, spk, emovec, settings, generator=torch.Generator().manual_seed(7)).codes for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert len(runs[0]) > 0
    torch.manual_seed(11)
    a = generate(model, text, spk, emovec, settings).codes
    torch.manual_seed(11)
    b = generate(model, text, spk, emovec, settings).codes
    assert torch.equal(a, b)


def test_max_tokens_flag_and_cancel(model, meta, gen):
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    stop_step = _stop_step(meta, model)
    n = max(1, min(5, stop_step))  # the cap must end the decode before the built-in stop does
    greedy = _case_settings(meta["generation"]["greedy"], model.cfg.max_mel_tokens)
    greedy.max_mel_tokens = n
    codes, hit_max = generate(model, text, spk, emovec, greedy)
    assert hit_max == (stop_step >= n) and codes.tolist() == gen["greedy.codes"][0, : min(n, stop_step)].tolist()
    n = max(1, min(4, stop_step))
    beams = GenerationConfig(do_sample=False, num_beams=3, max_mel_tokens=n)
    codes, hit_max = generate(model, text, spk, emovec, beams)
    assert hit_max == (stop_step >= n) and len(codes) == min(n, stop_step)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        generate(model, text, spk, emovec, GenerationConfig(), cancel=cancel)
    with pytest.raises(ValueError, match="max_mel_tokens"):
        generate(model, text, spk, emovec, GenerationConfig(max_mel_tokens=model.cfg.max_mel_tokens + 1))


def test_bad_checkpoints_are_refused(cfg, tmp_path):
    from core.checkpoints import load_torch

    state = load_torch(ref("gpt", cfg.gpt_checkpoint))
    missing = dict(state)
    missing.pop("mel_head.bias")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="mel_head.bias"):
        UnifiedVoice.from_checkpoint(tmp_path / "missing.pth", cfg.gpt)

    shaped = dict(state)
    shaped["gpt.h.0.attn.c_attn.weight"] = shaped["gpt.h.0.attn.c_attn.weight"].t().contiguous()
    torch.save({"model": shaped}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="wrong shapes: gpt.h.0.attn.c_attn.weight"):
        UnifiedVoice.from_checkpoint(tmp_path / "shape.pth", cfg.gpt)

    extra = dict(state)
    extra["inference_model.lm_head.1.weight"] = state["mel_head.weight"]
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        UnifiedVoice.from_checkpoint(tmp_path / "extra.pth", cfg.gpt)

    # {'model': ...} nesting and the old persistent GPT-2 mask buffers are accepted
    wrapped = dict(state)
    wrapped["gpt.h.0.attn.bias"] = torch.ones(1, 1, 8, 8).tril().bool()
    wrapped["gpt.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save({"model": wrapped}, tmp_path / "wrapped.pth")
    m = UnifiedVoice.from_checkpoint(tmp_path / "wrapped.pth", cfg.gpt)
    assert torch.equal(m.mel_head.weight, state["mel_head.weight"])


def test_generation_settings_map_onto_the_decoder():
    from core.api import GenerationSettings

    s = GenerationSettings(num_beams=2, top_k=5, max_mel_tokens=77, do_sample=False)
    g = GenerationConfig.from_settings(s)
    assert (g.num_beams, g.top_k, g.max_mel_tokens, g.do_sample) == (2, 5, 77, False)
    assert GenerationConfig.from_settings(GenerationSettings()) == GenerationConfig()  # same upstream defaults


def test_half_precision_path_runs_and_stays_close(cfg, meta, gen, lat, inputs):
    """fp16 weights (what CUDA fp16 uses): conditioning and latents come back float32 and near fp32."""
    half = UnifiedVoice.from_checkpoint(ref("gpt", cfg.gpt_checkpoint), cfg.gpt, dtype=torch.float16)
    golden = _golden("conditioning")
    spk = half.get_conditioning(inputs["spk_cond_emb"])
    assert spk.dtype == torch.float32
    assert_close("fp16 spk latent", spk, golden["spk.perceiver.out"], rel=5e-2)
    text, spk_latent, emovec = _case_inputs(meta, gen, "greedy")
    latent = half.latent(text, spk_latent, emovec, lat["greedy.codes_cut"][0])
    assert latent.dtype == torch.float32
    assert_close("fp16 latent", latent, lat["greedy.latent"], rel=5e-2)
    settings = GenerationConfig(num_beams=3, max_mel_tokens=6)
    codes, _ = generate(half, text, spk_latent, emovec, settings, generator=torch.Generator().manual_seed(0))
    assert 0 < len(codes) <= 6


@pytest.mark.parametrize("beams", [1, 3])
def test_decode_runs_the_prompt_once_and_one_batched_step_per_token(model, meta, gen, monkeypatch, beams):
    """No prompt re-runs, all beams in one forward per step (one weight pass)."""
    calls: dict[str, list] = {"prefill": [], "step": []}
    prefill, step = model.gpt.prefill, model.gpt.step
    monkeypatch.setattr(model.gpt, "prefill", lambda x, cache: calls["prefill"].append(x.shape) or prefill(x, cache))
    monkeypatch.setattr(
        model.gpt, "step", lambda x, cache, pos, mask: calls["step"].append((x.shape, pos)) or step(x, cache, pos, mask)
    )
    text, spk, emovec = _case_inputs(meta, gen, "greedy")
    n = max(2, min(6, _stop_step(meta, model)))  # the cap, not the built-in stop, ends the decode
    settings = GenerationConfig(do_sample=False, num_beams=beams, max_mel_tokens=n)
    codes, hit_max = generate(model, text, spk, emovec, settings)
    assert hit_max and len(codes) == n
    assert len(calls["prefill"]) == 1
    p1 = calls["prefill"][0][1]
    assert [c[0][0] for c in calls["step"]] == [beams] * (n - 1)
    assert [c[1] for c in calls["step"]] == list(range(p1, p1 + n - 1))


def test_conditioning_widths_come_from_the_weights():
    """The widths config.yaml does not state are read from gpt.pth, not assumed."""
    from core.checkpoints import load_torch
    from core.gpt.model import conditioning_widths

    cfg = load_config(ref("gpt", "config.yaml"))
    state = load_torch(ref("gpt", cfg.gpt_checkpoint))
    state = state.get("model", state)
    out = cfg.gpt.condition_module.output_size
    half = state["conditioning_encoder.embed.out.0.weight"].shape[1] // out
    semantic, emo = conditioning_widths(state, cfg.gpt)
    assert (semantic - 1) // 2 == half and semantic % 2 == 0
    assert emo == state["emo_perceiver_encoder.latents"].shape[-1]
    assert conditioning_widths(state, cfg.gpt, semantic_dim=2 * half + 1)[0] == 2 * half + 1  # a stated width wins
    narrow = dict(state)
    narrow["conditioning_encoder.embed.out.0.weight"] = torch.zeros(out, out * 100)
    narrow["emo_perceiver_encoder.latents"] = torch.zeros(1, 48)
    assert conditioning_widths(narrow, cfg.gpt) == (202, 48)
