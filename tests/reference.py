"""Where the parity goldens live: ``$INDEXTTS_REFERENCE``, else ``../shared/reference``, else ``tests/reference``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def reference_root() -> Path:
    env = os.environ.get("INDEXTTS_REFERENCE")
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"INDEXTTS_REFERENCE={env} is not a directory")
        return root
    for candidate in (REPO.parent / "shared" / "reference", REPO / "tests" / "reference"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no reference set: set INDEXTTS_REFERENCE or provide ../shared/reference")


def ref(*parts: str) -> Path:
    """A path inside the reference set; a missing file fails the test (never skips it)."""
    path = reference_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"reference file missing: {path}")
    return path


# ------------------------------------------------------------------ the e2e set (tests/test_e2e.py, bench/gpu_check.py)


def e2e_cases() -> dict:
    import json

    return json.loads(ref("e2e", "cases.json").read_text(encoding="utf-8"))


def e2e_model_paths():  # -> core.models.ModelPaths (imported lazily: this module stays import-light)
    """The tiny checkpoints the e2e goldens were made with (``e2e/cases.json`` names them, relative to ``e2e/``)."""
    from core.models import ModelPaths

    ckpts = e2e_cases()["checkpoints"]

    def ckpt(name: str) -> Path:
        return (ref("e2e") / ckpts[name]["path"]).resolve()

    return ModelPaths(
        config=ref("e2e", "config.yaml"), gpt=ckpt("gpt.pth"), s2mel=ckpt("s2mel.pth"), bpe=ref("data", "bpe.model"),
        w2v_stats=ref("w2vbert", "wav2vec2bert_stats.pt"), feat1=ref("e2e", "feat1.pt"), feat2=ref("e2e", "feat2.pt"),
        w2v_bert=None, semantic_codec=ckpt("semantic_codec"), campplus=ckpt("campplus"),
        bigvgan=ckpt("bigvgan_generator.pt").parent,
    )


def e2e_request(case: dict):  # -> core.api.SynthesisRequest
    """The request of one e2e case: greedy, one beam, the case's text, clips, emotion and limits."""
    from core.api import Emotion, GenerationSettings, SynthesisRequest

    inputs = case["inputs"]
    if inputs.get("use_emo_text"):
        raise AssertionError("emotion-from-text e2e cases need the Qwen model; not part of this layout")
    if inputs.get("emo_vector") is not None:
        emotion = Emotion("vector", vector=tuple(inputs["emo_vector"]), alpha=inputs["emo_alpha"],
                          random=bool(inputs.get("use_random")))
    elif inputs.get("emotion_clip"):
        emotion = Emotion("audio", audio=ref("data", "examples", inputs["emotion_clip"]), alpha=inputs["emo_alpha"])
    else:
        emotion = Emotion("speaker", alpha=inputs["emo_alpha"])
    settings = GenerationSettings(
        do_sample=False, num_beams=1, max_mel_tokens=inputs["max_mel_tokens"],
        max_text_tokens_per_segment=inputs["max_text_tokens_per_segment"],
        interval_silence_ms=inputs["interval_silence_ms"],
    )
    return SynthesisRequest(inputs["text"], ref("data", "examples", inputs["speaker_clip"]), emotion, settings)
