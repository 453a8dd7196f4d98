"""Health check behind ``python main.py --selftest`` (and the packaged app's ``--selftest``).

It proves that this install (a venv or a PyInstaller bundle) can do its job without the real models:

1. every ``core`` module (the projects and local-server packages included) and every native library the app
   needs imports (libsndfile, PortAudio, soxr, SentencePiece, kaldifst, tokenizers, safetensors, PyAV, FastAPI,
   uvicorn, tiktoken, fugashi with unidic-lite);
2. a small torch program runs (matmul, conv, STFT) and the inference device is reported;
3. the text front end works: the FST grammars shipped in ``core/assets/fst`` normalise numbers, and a
   SentencePiece model tokenises (``bpe.model`` from the model folder, else a tiny one trained on the spot);
4. audio files are written and decoded (WAV and FLAC through libsndfile, resampled with soxr);
5. the whole pipeline runs end to end on tiny random-weight models (w2v-BERT, semantic codec, CAMPPlus,
   GPT, s2mel, BigVGAN) through the real :class:`core.engine.Engine` code path;
6. an optional GUI check supplied by the caller (``main.py`` opens and closes the main window).

Results are logged (``core.selftest``) and can be written as a JSON report, since a windowed exe has no
console. :func:`run_selftest` returns 0 only when every check passed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CORE_MODULES = (
    "core.api",
    "core.config",
    "core.checkpoints",
    "core.models",
    "core.cli",
    "core.device",
    "core.text",
    "core.audio",
    "core.features",
    "core.w2vbert",
    "core.semantic_codec",
    "core.campplus",
    "core.gpt",
    "core.s2mel",
    "core.bigvgan",
    "core.engine",
    "core.streaming",
    "core.project",  # projects: model, store, import, render queue, export
    "core.project.store",
    "core.project.importers",
    "core.project.render",
    "core.project.export",
    "core.server",  # the local speech server (its submodules import fastapi and uvicorn)
    "core.server.keys",
    "core.server.app",
    "core.server.runner",
)
OPTIONAL_CORE_MODULES = ("core.qwen3", "core.qwen_emotion")  # checked only when present in this install
NATIVE_MODULES = (
    "numpy",
    "torch",
    "safetensors",
    "soundfile",
    "sounddevice",
    "soxr",
    "sentencepiece",
    "kaldifst",
    "tokenizers",
    "yaml",
    "jinja2",
    "huggingface_hub",
    "platformdirs",
    "av",  # PyAV (FFmpeg): M4B audiobook export
    "fastapi",  # the local speech server ...
    "uvicorn",  # ... and its HTTP server
    "tiktoken",  # IndexTTS-2.5 tokenizer
    "fugashi",  # IndexTTS-2.5 Japanese word split (MeCab) ...
    "unidic_lite",  # ... and its dictionary
)

GuiCheck = Callable[[Any], int]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    python: str = sys.version.split()[0]
    platform: str = platform.platform()
    frozen: bool = bool(getattr(sys, "frozen", False))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, indent=2, ensure_ascii=False)


class _Failed(Exception):
    """A check found a problem; the message says what."""


def _run(report: Report, name: str, fn: Callable[[], str]) -> Any:
    t0 = time.perf_counter()
    try:
        detail = fn()
        ok = True
    except _Failed as exc:
        ok, detail = False, str(exc)
    except Exception as exc:
        ok = False
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        detail = f"{type(exc).__name__}: {exc}{where}"
        log.debug("self-test step %s failed", name, exc_info=True)
    check = Check(name, ok, detail, round(time.perf_counter() - t0, 3))
    report.checks.append(check)
    (log.info if ok else log.error)("[%s] %s: %s (%.2f s)", "ok" if ok else "FAIL", name, detail, check.seconds)
    return check


# ------------------------------------------------------------------------------------------------ checks


def _present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def check_imports() -> str:
    names = list(CORE_MODULES) + [name for name in OPTIONAL_CORE_MODULES if _present(name)]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import error makes the install unhealthy
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    if failed:
        raise _Failed("cannot import " + "; ".join(failed))
    return f"{len(names)} core modules imported"


def check_native() -> str:
    versions = []
    failed = []
    for name in NATIVE_MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - e.g. OSError when PortAudio/libsndfile is missing
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        versions.append(f"{name} {getattr(mod, '__version__', '?')}")
    if failed:
        raise _Failed("cannot load " + "; ".join(failed) + ". Reinstall the app (or run the launcher again).")
    import sounddevice
    import soundfile

    versions.append(f"libsndfile {soundfile.__libsndfile_version__}")
    versions.append(sounddevice.get_portaudio_version()[1])
    return ", ".join(versions)


def check_torch() -> str:
    import torch

    from .device import device_report

    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=g)
    b = torch.linalg.solve(a @ a.T + 64 * torch.eye(64), a)
    conv = torch.nn.functional.conv1d(torch.randn(1, 4, 256, generator=g), torch.randn(8, 4, 5, generator=g))
    spec = torch.stft(torch.randn(4096, generator=g), 512, 128, window=torch.hann_window(512), return_complex=True)
    values = torch.cat([b.flatten(), conv.flatten(), spec.abs().flatten()])
    if not torch.isfinite(values).all():
        raise _Failed("a small torch program produced NaN/inf; the PyTorch install is broken")
    usable, words = device_report("auto")
    if not usable:
        raise _Failed(words.replace("\n", " "))
    return f"torch {torch.__version__}; " + words.splitlines()[-1]


def _tiny_bpe(folder: Path) -> Path:
    """Train a tiny SentencePiece model (the real ``bpe.model`` is part of the downloaded models)."""
    import sentencepiece as spm

    corpus = folder / "corpus.txt"
    lines = [
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "HELLO WORLD THIS IS A VOICE TEST",
        "你 好 世 界 今 天 天 气 很 好",
        "二 零 二 四 年 三 月 五 日",
    ]
    corpus.write_text("\n".join(lines * 8) + "\n", encoding="utf-8")
    prefix = folder / "tiny_bpe"
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=80, hard_vocab_limit=False, model_type="unigram",
        character_coverage=1.0, minloglevel=2,
    )
    return prefix.with_suffix(".model")


def check_text(model_dir: Path | None, work: Path) -> tuple[str, Path]:
    from .text import TextFrontend

    bpe = model_dir / "bpe.model" if model_dir is not None else None
    if bpe is not None and bpe.is_file():
        note = f"bpe.model from {model_dir}"
    else:
        bpe = _tiny_bpe(work)
        where = f"in {model_dir}" if model_dir is not None else "(no model folder)"
        note = f"no bpe.model {where}: used a tiny SentencePiece model trained now"
    fe = TextFrontend(bpe)
    zh = fe.normalize("2024年3月5日，温度-3.5°C。")
    en = fe.normalize("It costs $3.50 on May 5, 2024.")
    for src, out in (("zh", zh), ("en", en)):
        if any(ch.isascii() and ch.isdigit() for ch in out):
            raise _Failed(f"the {src} number grammar did not read the digits out: {out!r} (FST assets missing?)")
    ids = fe.encode("Hello world, 你好世界 2024.")
    if not ids or any(i < 0 or i >= fe.vocab_size for i in ids):
        raise _Failed(f"tokenizer produced bad ids {ids}")
    return f"{note}; normalised {zh!r}; {len(ids)} token ids", bpe


def check_audio(work: Path) -> tuple[str, Path]:
    import numpy as np
    import soundfile as sf

    from .audio import decode_audio, load_speaker_audio

    rate = 24000
    t = np.arange(int(1.2 * rate)) / rate
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    wav = work / "voice.wav"
    flac = work / "voice.flac"
    sf.write(wav, np.stack([wave, wave], axis=1), rate, subtype="PCM_16")
    sf.write(flac, wave, rate, subtype="PCM_16")
    if decode_audio(flac).sample_rate != rate:
        raise _Failed("FLAC round trip changed the sample rate")
    speaker = load_speaker_audio(wav)
    n22, n16 = speaker.audio_22k.shape[-1], speaker.audio_16k.shape[-1]
    if abs(n22 - 1.2 * 22050) > 64 or abs(n16 - 1.2 * 16000) > 64:
        raise _Failed(f"resampled lengths are wrong: {n22} samples at 22.05 kHz, {n16} at 16 kHz for 1.2 s")
    return f"WAV/FLAC written and decoded; 1.2 s clip -> {n22} @ 22.05 kHz, {n16} @ 16 kHz", wav


# A config shaped like the released config.yaml, with every width tiny (the w2v-BERT width 1024 is fixed by the
# GPT's conditioning encoders and the codec).
TINY_CONFIG: dict[str, Any] = {
    "dataset": {"bpe_model": "bpe.model"},
    "gpt": {
        "model_dim": 32, "layers": 1, "heads": 2, "max_mel_tokens": 64, "max_text_tokens": 64,
        "number_text_tokens": 12000, "number_mel_codes": 8194, "start_mel_token": 8192, "stop_mel_token": 8193,
        "start_text_token": 0, "stop_text_token": 1,
        "condition_module": {"output_size": 32, "linear_units": 32, "attention_heads": 2, "num_blocks": 1},
        "emo_condition_module": {"output_size": 32, "linear_units": 32, "attention_heads": 2, "num_blocks": 1},
    },
    "semantic_codec": {"codebook_size": 8192, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 32,
                       "vocos_intermediate_dim": 32, "vocos_num_layers": 1},
    "s2mel": {
        "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                            "n_mels": 80, "fmin": 0, "fmax": None}},
        "style_encoder": {"dim": 192},
        "length_regulator": {"channels": 32, "in_channels": 1024},
        "DiT": {"hidden_dim": 32, "num_heads": 2, "depth": 2, "in_channels": 80, "content_dim": 32},
        "wavenet": {"hidden_dim": 32, "num_layers": 1, "kernel_size": 3},
    },
    "emo_num": [3, 17, 2, 8, 4, 5, 10, 24],
}


def build_tiny_engine(bpe: Path):
    """An :class:`~core.engine.Engine` whose every stage is a tiny random-weight model (CPU, float32)."""
    import torch

    from .bigvgan import BigVGAN, BigVGANConfig
    from .campplus import CAMPPlus, CAMPPlusConfig
    from .config import IndexTTSConfig, build
    from .engine import Engine
    from .gpt import UnifiedVoice
    from .gpt.emotion import EmotionMatrices
    from .pipeline import Pipeline
    from .s2mel import S2Mel
    from .semantic_codec import SemanticCodec
    from .text import TextFrontend
    from .w2vbert import SemanticEncoder, W2VBert, W2VBertConfig

    torch.manual_seed(0)
    data = dict(TINY_CONFIG, bpe_model="bpe.model")
    cfg = build(IndexTTSConfig, data, Path("<selftest tiny config>"))
    w2v_cfg = W2VBertConfig(hidden_size=1024, num_hidden_layers=1, num_attention_heads=8, intermediate_size=32,
                            conv_depthwise_kernel_size=5, has_masked_spec_embed=False)
    hidden = w2v_cfg.hidden_size
    campplus = CAMPPlus(CAMPPlusConfig(growth_rate=4, bn_size=2, init_channels=16, head_channels=4,
                                       block_layers=(1, 1, 1))).eval()
    gpt = UnifiedVoice(cfg.require("gpt")).eval().requires_grad_(False)
    gpt.prepare_for_inference()
    rows = sum(cfg.emo_num)
    pipeline = Pipeline(
        cfg,
        frontend=TextFrontend(bpe),
        semantic=SemanticEncoder(W2VBert(w2v_cfg), torch.zeros(hidden), torch.ones(hidden), output_layer=1).eval(),
        codec=SemanticCodec(cfg.require("semantic_codec")).eval(),
        campplus=campplus,
        gpt=gpt,
        s2mel=S2Mel(cfg.require("s2mel"), gpt_dim=cfg.require("gpt").model_dim).eval(),
        vocoder=BigVGAN(BigVGANConfig(num_mels=80, upsample_rates=[4, 4, 4, 4], upsample_kernel_sizes=[8, 8, 8, 8],
                                      upsample_initial_channel=32, resblock_kernel_sizes=[3],
                                      resblock_dilation_sizes=[[1, 3]])).eval(),
        emotions=EmotionMatrices.from_tensors(torch.randn(rows, campplus.cfg.embedding_size),
                                              torch.randn(rows, cfg.require("gpt").model_dim), cfg.emo_num),
    )
    eng = Engine(pipeline=pipeline)
    return eng


def check_synthesis(eng: Any, voice: Path, emotion_mode: str) -> str:
    import numpy as np

    from .api import Emotion, GenerationSettings, SynthesisRequest

    settings = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=6, diffusion_steps=2, seed=0,
                                  max_text_tokens_per_segment=40)  # within the tiny GPT's 64 text positions
    if emotion_mode == "vector":
        emotion = Emotion(mode="vector", vector=(0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.2), alpha=0.8)
    else:
        emotion = Emotion()
    stages: list[str] = []
    result = eng.synthesize(SynthesisRequest("Hello world. 你好。", voice, emotion, settings),
                            on_progress=lambda p: stages.append(p.stage))
    audio = np.asarray(result.audio)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise _Failed(f"synthesis returned {audio.dtype} audio of shape {audio.shape}, expected 1-D int16")
    if audio.size == 0:
        raise _Failed(f"synthesis returned no audio (warnings: {result.warnings})")
    if "Done" not in stages:
        raise _Failed(f"progress never reported 'Done' (stages: {sorted(set(stages))})")
    return f"{audio.size} samples @ {result.sample_rate} Hz in {len(result.segments)} segment(s)"


def check_models(model_dir: Path) -> str:
    from .models import check, problems

    statuses = check(model_dir, include_optional=False)
    bad = problems(statuses)
    if bad:
        return f"models not (fully) installed in {model_dir}: {len(bad)} file(s) to download (the app offers it)"
    return f"models complete in {model_dir}"


# --------------------------------------------------------------------------------------------------- driver


def run_checks(model_dir: str | Path | None = None, gui: GuiCheck | None = None) -> Report:
    """Run every check and return the report (never raises for a failing check)."""
    report = Report()
    log.info("self-test: Python %s on %s%s", report.python, report.platform, " (packaged app)" if report.frozen else "")
    _run(report, "imports", check_imports)
    _run(report, "native libraries", check_native)
    _run(report, "torch", check_torch)
    from .models import locate_model_dir

    folder = locate_model_dir(model_dir)
    with tempfile.TemporaryDirectory(prefix="indextts-selftest-") as tmp:
        work = Path(tmp)
        found: dict[str, Any] = {}

        def text() -> str:
            detail, found["bpe"] = check_text(folder, work)
            return detail

        def audio() -> str:
            detail, found["voice"] = check_audio(work)
            return detail

        def engine() -> str:
            if "bpe" not in found:
                raise _Failed("skipped: the text front end failed")
            found["engine"] = build_tiny_engine(found["bpe"])
            return "tiny w2v-BERT, codec, CAMPPlus, GPT, s2mel and BigVGAN built"

        _run(report, "text front end", text)
        _run(report, "audio files", audio)
        _run(report, "tiny models", engine)
        for mode in ("speaker", "vector"):
            def synth(mode: str = mode) -> str:
                if "engine" not in found or "voice" not in found:
                    raise _Failed("skipped: the tiny models or the audio check failed")
                return check_synthesis(found["engine"], found["voice"], mode)

            _run(report, f"tiny synthesis (emotion: {mode})", synth)
        _run(report, "model folder", lambda: check_models(folder))
        if gui is not None:
            def window() -> str:
                code = gui(found.get("engine"))
                if code != 0:
                    raise _Failed(f"the main window check returned {code} (see the log above)")
                return "main window opened and closed"

            _run(report, "main window", window)
    return report


def run_selftest(model_dir: str | Path | None = None, gui: GuiCheck | None = None,
                 report_path: str | Path | None = None) -> int:
    """0 when healthy, 1 otherwise. ``gui(engine) -> int`` checks the window (``main.py`` supplies it)."""
    report = run_checks(model_dir, gui)
    if report_path:
        path = Path(report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.to_json(), encoding="utf-8")
    failed = [c.name for c in report.checks if not c.ok]
    if failed:
        log.error("self-test FAILED: %s", ", ".join(failed))
        return 1
    log.info("self-test passed (%d checks)", len(report.checks))
    return 0
