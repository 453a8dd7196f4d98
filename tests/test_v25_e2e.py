"""IndexTTS-2.5 end to end on the tiny models against upstream ``infer_v2_5`` (<reference>/v2_5/e2e).

The 2.5 stages are chained here as upstream chains them (the engine does not drive 2.5 yet): speaker clip ->
ref mel + CAMPPlus style + prompt condition from the given w2v features (README deviation i); emotion vector;
text front end; greedy GPT with repetition penalty (ii); codec decode; length regulation with the duration
factor; CFM from the saved noise (iii); BigVGAN; int16 join. Every stage is also checked on the golden output
of the stage before (teacher forcing). Every case listed in ``cases.json`` runs; nothing is hard-coded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import ref
from safetensors.torch import load_file
from test_e2e import close

from core.api import SAMPLE_RATE, join_segments
from core.audio import load_speaker_audio
from core.bigvgan import BigVGAN
from core.campplus import CAMPPlus
from core.codec_v25 import EnhancedCodec, EnhancedCodecConfig
from core.config import load_config
from core.features import campplus_input, mel_spectrogram
from core.gpt import GenerationConfig, UnifiedVoice
from core.gpt.emotion import EmotionMatrices, blend_emovec, scale_emo_weights
from core.gpt.generate import generate
from core.s2mel.v25 import S2MelV25, target_length
from core.text.v25 import V25TextFrontend, lang_index
from core.text.v25_vocab import VOCAB_FILE

CASES = json.loads(ref("v2_5", "e2e", "cases.json").read_text(encoding="utf-8"))


def _file(name: str) -> Path:
    return (ref("v2_5", "e2e") / CASES["checkpoints"][name]["path"]).resolve()


class Models:
    def __init__(self) -> None:
        cfg = load_config(ref("v2_5", "e2e", "config.yaml"))
        self.cfg = cfg
        self.text = V25TextFrontend(_file(VOCAB_FILE))
        self.gpt = UnifiedVoice.from_checkpoint(_file("gpt.pth"), cfg.require("gpt"), campplus=True)
        codec_cfg = EnhancedCodecConfig(**vars(cfg.require("semantic_codec")))
        self.codec = EnhancedCodec.from_file(_file("codec.pth"), codec_cfg)
        self.s2mel = S2MelV25.from_checkpoint(_file("s2mel.pth"), cfg.require("s2mel"))
        self.campplus = CAMPPlus.from_checkpoint(_file("hf_cache/campplus_cn_common.bin")).eval()
        self.vocoder = BigVGAN.from_pretrained(_file("hf_cache/bigvgan/bigvgan_generator.pt").parent).eval()
        self.emotions = EmotionMatrices.load(_file("feat1.pt"), _file("feat2.pt"), cfg.emo_num)


@pytest.fixture(scope="module")
def m() -> Models:
    return Models()


def _voice(m: Models, case: dict, g: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ref_mel, style) of the case's speaker clip."""
    audio = load_speaker_audio(ref("data", "examples", case["inputs"]["spk"]))
    spec = m.cfg.require("s2mel").preprocess_params
    sp = spec.spect_params
    with torch.inference_mode():
        ref_mel = mel_spectrogram(audio.audio_22k, n_fft=sp.n_fft, win=sp.win_length, hop=sp.hop_length,
                                  n_mels=sp.n_mels, sr=spec.sr, fmin=sp.fmin, fmax=sp.fmax)
        style = m.campplus(campplus_input(audio.audio_16k))
    assert ref_mel.shape[-1] == case["ref_mel_frames"]
    return ref_mel, style


def _emovec(m: Models, case: dict, spk: torch.Tensor, emo: torch.Tensor, style: torch.Tensor,
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
def test_e2e_case(m: Models, case: dict) -> None:
    g = load_file(str(ref("v2_5", "e2e", case["file"])))
    inputs = case["inputs"]
    spk = g["spk_cond_emb_x8"].float() / 8
    emo = g["emo_cond_emb_x8"].float() / 8
    assert spk.shape[1] == case["w2v_replacement"]["speaker"]["T"]

    ref_mel, style = _voice(m, case, g)
    close(ref_mel, g["ref_mel"], 1e-4, "ref_mel")
    close(style, g["style"], 1e-4, "style")
    prompt = m.s2mel.prompt_condition(spk, ref_mel.shape[-1])
    close(prompt, g["prompt_condition"], 1e-4, "prompt_condition")
    emovec = _emovec(m, case, spk, emo, style, g)

    front = case["text_front"]
    assert m.text.prepare(inputs["text"], inputs["lang"]).split_input == front["text"]
    segments = m.text.segments(inputs["text"], inputs["lang"], inputs["max_text_tokens_per_segment"])
    assert [s.text for s in segments] == front["segments"]
    assert len(segments) == len(case["segments_detail"])
    latent = m.gpt.campplus_latent(style)
    settings = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=10.0,
                                max_mel_tokens=inputs["max_mel_tokens"])
    pieces = []
    for i, (seg, detail) in enumerate(zip(segments, case["segments_detail"])):
        close(emovec, g[f"seg{i}.emovec"], 1e-4, f"seg{i}.emovec")
        assert seg.gpt_input == g[f"seg{i}.text_ids"][0].tolist() == detail["text_ids"]
        lang = lang_index(inputs["lang"])
        assert lang == int(g[f"seg{i}.lang_index"][0]) == detail["lang_index"]
        close(latent, g[f"seg{i}.speech_conditioning_latent"], 1e-4, f"seg{i}.speech_conditioning_latent")
        codes, hit_max = generate(m.gpt, seg.gpt_input, latent, emovec, settings, lang=lang)
        assert codes.tolist() == g[f"seg{i}.codes"][0].tolist(), f"seg{i}.codes"
        assert hit_max == (not detail["stopped_on_stop_token"])
        s_infer = m.codec.decode(codes[None])
        close(s_infer, g[f"seg{i}.S_infer"], 1e-4, f"seg{i}.S_infer")
        n = target_length(s_infer.shape[1], inputs["duration_factor"])
        assert n == int(g[f"seg{i}.target_lengths"].reshape(-1)[0]) == detail["target_length"]
        cond = m.s2mel.target_condition(s_infer, inputs["duration_factor"])
        close(cond, g[f"seg{i}.cond"], 1e-4, f"seg{i}.cond")
        mel = m.s2mel.mel(prompt, cond, ref_mel, style, noise=g[f"seg{i}.cfm_noise"])
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


def test_stage_by_stage(m: Models) -> None:
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
