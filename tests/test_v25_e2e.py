"""IndexTTS-2.5 end to end on the tiny models against upstream ``infer_v2_5`` (<reference>/v2_5/e2e).

The 2.5 stages are chained here as upstream chains them (the engine does not drive 2.5 yet): speaker clip ->
ref mel + CAMPPlus style + prompt condition from the given w2v features (README deviation i); emotion vector;
text front end; greedy GPT with repetition penalty (ii); codec decode; length regulation with the duration
factor; CFM from the saved noise (iii); BigVGAN; int16 join. Every stage is also checked on the golden output
of the stage before (teacher forcing). Every case listed in ``cases.json`` runs; nothing is hard-coded.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ref
from safetensors.torch import load_file
from test_e2e import close
from tiny_models import tiny_v25_model_dir

from core.api import SAMPLE_RATE, join_segments
from core.audio import load_speaker_audio
from core.gpt import GenerationConfig
from core.gpt.emotion import blend_emovec, scale_emo_weights
from core.gpt.generate import generate
from core.pipeline_v25 import (
    V25Paths,
    V25Pipeline,
    detect_version,
    mel_and_style,
    segment_mel,
    semantic_features,
    speaker_conditioning,
)
from core.s2mel.v25 import target_length
from core.text.v25 import SUPPORTED_LANGUAGES, default_segment_tokens, lang_index
from core.text.v25_vocab import VOCAB_FILE

CASES = json.loads(ref("v2_5", "e2e", "cases.json").read_text(encoding="utf-8"))


def _file(name: str) -> Path:
    return (ref("v2_5", "e2e") / CASES["checkpoints"][name]["path"]).resolve()


def _paths() -> V25Paths:
    """The tiny 2.5 model as the goldens name its files (relative to ``v2_5/e2e``)."""
    return V25Paths(
        config=ref("v2_5", "e2e", "config.yaml"), gpt=_file("gpt.pth"), codec=_file("codec.pth"),
        s2mel=_file("s2mel.pth"), vocab=_file(VOCAB_FILE), w2v_stats=_file("wav2vec2bert_stats.pt"),
        feat1=_file("feat1.pt"), feat2=_file("feat2.pt"), w2v_bert=None,
        campplus=_file("hf_cache/campplus_cn_common.bin"), bigvgan=_file("hf_cache/bigvgan/config.json").parent,
    )


@pytest.fixture(scope="module")
def m() -> V25Pipeline:
    return V25Pipeline.load(_paths())


def _emovec(m: V25Pipeline, case: dict, spk: torch.Tensor, emo: torch.Tensor, style: torch.Tensor,
            g: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = case["inputs"]
    with torch.inference_mode():
        merged = m.gpt.merge_emovec(spk, emo, case["merge_alpha"])
    close(merged, g["emovec_merge"], 1e-4, "emovec_merge")
    if inputs.get("emo_vector") is None:
        return merged
    weights = scale_emo_weights(inputs["emo_vector"], inputs["emo_alpha"])
    assert weights == pytest.approx(case["emo_weight_vector"], abs=1e-12)
    assert m.emotions.select(style) == case["emo_matrix_row_in_group"]
    mat, weight_sum = m.emotions.mix(weights, style)
    close(mat, g["emovec_mat"], 1e-4, "emovec_mat")
    return blend_emovec(mat, weight_sum, merged)


def _pcm(wav: torch.Tensor) -> np.ndarray:
    return torch.clamp(32767 * wav, -32767.0, 32767.0).to(torch.int16).numpy().reshape(-1)


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_e2e_case(m: V25Pipeline, case: dict) -> None:
    g = load_file(str(ref("v2_5", "e2e", case["file"])))
    inputs = case["inputs"]
    spk = g["spk_cond_emb_x8"].float() / 8
    emo = g["emo_cond_emb_x8"].float() / 8
    assert spk.shape[1] == case["w2v_replacement"]["speaker"]["T"]

    ref_mel, style = mel_and_style(m, load_speaker_audio(ref("data", "examples", inputs["spk"])))
    assert ref_mel.shape[-1] == case["ref_mel_frames"]
    close(ref_mel, g["ref_mel"], 1e-4, "ref_mel")
    close(style, g["style"], 1e-4, "style")
    voice = speaker_conditioning(m, spk, style, ref_mel)
    close(voice.prompt_condition, g["prompt_condition"], 1e-4, "prompt_condition")
    emovec = _emovec(m, case, spk, emo, style, g)

    front = case["text_front"]
    assert m.frontend.prepare(inputs["text"], inputs["lang"]).split_input == front["text"]
    segments = m.frontend.segments(inputs["text"], inputs["lang"], inputs["max_text_tokens_per_segment"])
    assert [s.text for s in segments] == front["segments"]
    assert len(segments) == len(case["segments_detail"])
    settings = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=10.0,
                                max_mel_tokens=inputs["max_mel_tokens"])
    pieces = []
    for i, (seg, detail) in enumerate(zip(segments, case["segments_detail"])):
        close(emovec, g[f"seg{i}.emovec"], 1e-4, f"seg{i}.emovec")
        assert seg.gpt_input == g[f"seg{i}.text_ids"][0].tolist() == detail["text_ids"]
        lang = lang_index(inputs["lang"])
        assert lang == int(g[f"seg{i}.lang_index"][0]) == detail["lang_index"]
        close(voice.spk_latent, g[f"seg{i}.speech_conditioning_latent"], 1e-4, f"seg{i}.speech_conditioning_latent")
        codes, hit_max = generate(m.gpt, seg.gpt_input, voice.spk_latent, emovec, settings, lang=lang)
        assert codes.tolist() == g[f"seg{i}.codes"][0].tolist(), f"seg{i}.codes"
        assert hit_max == (not detail["stopped_on_stop_token"])
        s_infer = m.codec.decode(codes[None])
        close(s_infer, g[f"seg{i}.S_infer"], 1e-4, f"seg{i}.S_infer")
        n = target_length(s_infer.shape[1], inputs["duration_factor"])
        assert n == int(g[f"seg{i}.target_lengths"].reshape(-1)[0]) == detail["target_length"]
        cond = m.s2mel.target_condition(s_infer, inputs["duration_factor"])
        close(cond, g[f"seg{i}.cond"], 1e-4, f"seg{i}.cond")
        mel = segment_mel(m, voice, codes, inputs["duration_factor"], noise=g[f"seg{i}.cfm_noise"])
        close(mel, g[f"seg{i}.vc_target"], 5e-4, f"seg{i}.vc_target")
        with torch.inference_mode():
            wav = m.vocoder(mel)
        close(wav, g[f"seg{i}.bigvgan_out"], 2e-3, f"seg{i}.bigvgan_out")
        pieces.append(_pcm(wav))

    out = case["output"]
    gap_ms = round(out["silence_samples_between_segments"] * 1000 / SAMPLE_RATE)
    audio = join_segments(pieces, gap_ms)
    expected = g["wav_int16"].to(torch.int32)
    assert audio.shape[0] == expected.numel() == out["n_samples"]
    diff = (torch.from_numpy(audio).to(torch.int32) - expected).abs().max().item()
    assert diff <= 32, f"wav_int16 max |diff| {diff} LSB > 32"


def test_stage_by_stage(m: V25Pipeline) -> None:
    """Teacher-forced: each stage fed the golden output of the stage before (localises a mismatch)."""
    for case in CASES["cases"]:
        g = load_file(str(ref("v2_5", "e2e", case["file"])))
        df = case["inputs"]["duration_factor"]
        for i in range(len(case["segments_detail"])):
            close(m.codec.decode(g[f"seg{i}.codes"]), g[f"seg{i}.S_infer"], 1e-4, "S_infer")
            close(m.s2mel.target_condition(g[f"seg{i}.S_infer"], df), g[f"seg{i}.cond"], 1e-4, "cond")
            mel = m.s2mel.mel(g["prompt_condition"], g[f"seg{i}.cond"], g["ref_mel"], g["style"],
                              noise=g[f"seg{i}.cfm_noise"])
            close(mel, g[f"seg{i}.vc_target"], 5e-4, "vc_target")
            with torch.inference_mode():
                wav = m.vocoder(g[f"seg{i}.vc_target"])
            close(wav, g[f"seg{i}.bigvgan_out"], 1e-4, "bigvgan_out")
            want = torch.clamp(32767 * g[f"seg{i}.bigvgan_out"], -32767.0, 32767.0).to(torch.int32).reshape(-1)
            got = torch.from_numpy(_pcm(wav)).to(torch.int32)
            assert (got - want).abs().max().item() <= 2


def test_version_is_told_by_the_files(tmp_path: Path) -> None:
    for name in ("config.yaml", "gpt.pth"):
        (tmp_path / name).write_bytes(b"x")
    assert detect_version(tmp_path) == "2.0"
    (tmp_path / "codec.pth").write_bytes(b"x")
    assert detect_version(tmp_path) == "2.0"  # the codec alone is not enough
    (tmp_path / VOCAB_FILE).write_bytes(b"x")
    assert detect_version(tmp_path) == "2.5"
    assert detect_version(ref("data")) == "2.0"


def test_model_folder_loads_and_every_language_speaks() -> None:
    """A 2.5 folder in the upstream layout (tiny models): told apart from 2.0, its files found, and each
    language rendered from a clip through w2v-BERT, with the length the duration factor asks for."""
    folder = tiny_v25_model_dir()
    assert detect_version(folder) == "2.5"
    paths = V25Paths.from_model_dir(folder)
    for f in fields(paths):
        value = getattr(paths, f.name)
        assert value is None if f.name in ("glossary", "qwen") else Path(value).exists(), f.name  # optional
    p = V25Pipeline.load(paths)
    audio = load_speaker_audio(ref("data", "examples", CASES["cases"][0]["inputs"]["spk"]))
    spk = semantic_features(p, audio.audio_16k)
    assert spk.shape[-1] == p.codec.cfg.hidden_size
    ref_mel, style = mel_and_style(p, audio)
    voice = speaker_conditioning(p, spk, style, ref_mel)
    emovec = p.gpt.merge_emovec(spk, spk, 1.0)
    texts = {"zh": "你好，世界。", "en": "Hello there.", "ja": "こんにちは。", "es": "¡Hola, amigos!",
             "ar": "مرحبا بكم."}
    assert set(texts) == set(SUPPORTED_LANGUAGES)
    settings = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=10.0, max_mel_tokens=12)
    for lang, text in texts.items():
        segments = p.frontend.segments(text, lang, default_segment_tokens(lang))
        assert len(segments) == 1
        codes, _ = generate(p.gpt, segments[0].gpt_input, voice.spk_latent, emovec, settings, lang=lang_index(lang))
        assert 0 < codes.numel() <= settings.max_mel_tokens
        for df in (0.5, 2.0):
            mel = segment_mel(p, voice, codes, df, steps=2)
            assert mel.shape[-1] == target_length(2 * codes.numel(), df), (lang, df)
            with torch.inference_mode():
                wav = p.vocoder(mel)
            assert wav.numel() == 256 * mel.shape[-1] and bool(torch.isfinite(wav).all()), (lang, df)
