"""Tiny reference files laid out like the official release (for the downloader, the engine and the CLI), a
hub-like server serving them, and the one test-clip writer."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hub_server import HubServer
from reference import ref

from core import models
from core.config import load_config


def tiny_sources() -> dict[str, Path]:
    """Manifest local path -> the tiny reference file standing in for it (same formats as the release)."""
    return {
        "config.yaml": ref("e2e", "config.yaml"),
        "bpe.model": ref("data", "bpe.model"),
        "gpt.pth": ref("gpt", "gpt.pth"),
        "s2mel.pth": ref("s2mel", "s2mel.pth"),
        "wav2vec2bert_stats.pt": ref("w2vbert", "wav2vec2bert_stats.pt"),
        "feat1.pt": ref("e2e", "feat1.pt"),
        "feat2.pt": ref("e2e", "feat2.pt"),
        "hf_cache/w2v-bert-2.0/config.json": ref("w2vbert", "w2v-bert-2.0", "config.json"),
        "hf_cache/w2v-bert-2.0/model.safetensors": ref("w2vbert", "w2v-bert-2.0", "model.safetensors"),
        "hf_cache/semantic_codec_model.safetensors": ref("codec_campplus", "semantic_codec", "model.safetensors"),
        "hf_cache/campplus_cn_common.bin": ref("codec_campplus", "campplus_cn_common.bin"),
        "hf_cache/bigvgan/config.json": ref("bigvgan", "config.json"),
        "hf_cache/bigvgan/bigvgan_generator.pt": ref("bigvgan", "bigvgan_generator.pt"),
    }


# The tiny files are not the official ones: same manifest, without the official sizes/hashes.
TINY_MANIFEST = tuple(dataclasses.replace(m, size=None, sha256=None) for m in models.MANIFEST if not m.optional)


def make_model_dir(root: Path) -> Path:
    """The manifest's files as independent copies (the downloader tests change and delete them)."""
    for local, src in tiny_sources().items():
        dst = root / local
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(src).resolve(), dst)
    return root


def serve_all(hub: HubServer) -> None:
    by_local = {m.local: m for m in models.MANIFEST}
    for local, src in tiny_sources().items():
        m = by_local[local]
        hub.files[(m.repo, m.remote)] = src.read_bytes()


# ------------------------------------------------------------- a loadable model folder for the engine and CLI

W2V_HEADS = 8
W2V_FFN = 16  # intermediate size: the feed-forward width does not matter for wiring, keep the file small


def _place(src: Path, dst: Path) -> None:
    """Put ``src`` at ``dst`` without copying data where the OS allows (hard link, then symlink, then copy).

    ``src`` is resolved first: a reference set may hold relative symlinks, and a hard link to the link itself
    would point elsewhere from the new folder."""
    src = Path(src).resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    for how in (os.link, os.symlink):
        try:
            how(src, dst)
            return
        except OSError:
            continue
    shutil.copyfile(src, dst)


def write_tiny_model_dir(root: Path) -> Path:
    """A complete model folder in the upstream layout (``core.models`` manifest) with tiny random-weight models."""
    from safetensors.torch import save_file

    from core.w2vbert import SEMANTIC_LAYER, W2VBert, W2VBertConfig

    cases = json.loads(ref("e2e", "cases.json").read_text(encoding="utf-8"))

    def ckpt(name: str) -> Path:
        return (ref("e2e") / cases["checkpoints"][name]["path"]).resolve()

    files = {
        "config.yaml": ref("e2e", "config.yaml"),
        "bpe.model": ref("data", "bpe.model"),
        "gpt.pth": ckpt("gpt.pth"),
        "s2mel.pth": ckpt("s2mel.pth"),
        "feat1.pt": ref("e2e", "feat1.pt"),
        "feat2.pt": ref("e2e", "feat2.pt"),
        "hf_cache/semantic_codec_model.safetensors": ckpt("semantic_codec"),
        "hf_cache/campplus_cn_common.bin": ckpt("campplus"),
        "hf_cache/bigvgan/bigvgan_generator.pt": ckpt("bigvgan_generator.pt"),
        "hf_cache/bigvgan/config.json": ckpt("bigvgan_config.json"),
    }
    for local, src in files.items():
        _place(src, root / local)

    # w2v-BERT: the semantic width the codec (and the GPT conditioning) take; only the layers IndexTTS2 reads.
    hidden = load_config(root / "config.yaml").require("semantic_codec").hidden_size
    hf = {
        "model_type": "wav2vec2-bert", "hidden_size": hidden, "num_hidden_layers": SEMANTIC_LAYER,
        "num_attention_heads": W2V_HEADS, "intermediate_size": W2V_FFN, "feature_projection_input_dim": 160,
        "left_max_position_embeddings": 64, "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 3,
        "layer_norm_eps": 1e-5, "mask_time_prob": 0.0, "position_embeddings_type": "relative_key",
        "hidden_act": "swish", "add_adapter": False,
    }
    torch.manual_seed(0)
    model = W2VBert(W2VBertConfig.from_hf(hf))
    w2v = root / "hf_cache" / "w2v-bert-2.0"
    w2v.mkdir(parents=True)
    (w2v / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    # float16 on disk halves the file; the loader converts to float32
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(w2v / "model.safetensors"))
    torch.save({"mean": torch.zeros(hidden), "var": torch.ones(hidden)}, root / "wav2vec2bert_stats.pt")
    return root


def _session_folder(prefix: str, write: Callable[[Path], Path]) -> Path:
    """``write(<temp>/checkpoints)`` in a temporary folder removed when the test process exits."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, base, True)
    return write(base / "checkpoints")


@functools.cache
def tiny_model_dir() -> Path:
    """Built once per test session (shared by test_engine and test_cli)."""
    return _session_folder("indextts-tiny-models-", write_tiny_model_dir)


def write_tiny_v25_model_dir(root: Path) -> Path:
    """An IndexTTS-2.5 model folder in the upstream layout with the tiny models of the 2.5 e2e goldens; w2v-BERT
    and its statistics are the 2.0 tiny folder's (the two versions share them)."""
    cases = json.loads(ref("v2_5", "e2e", "cases.json").read_text(encoding="utf-8"))
    _place(ref("v2_5", "e2e", "config.yaml"), root / "config.yaml")
    for local, info in cases["checkpoints"].items():
        if local != "wav2vec2bert_stats.pt":
            _place(ref("v2_5", "e2e") / info["path"], root / local)
    base = tiny_model_dir()
    w2v = "hf_cache/w2v-bert-2.0"
    for local in ("wav2vec2bert_stats.pt", f"{w2v}/config.json", f"{w2v}/model.safetensors"):
        _place(base / local, root / local)
    return root


@functools.cache
def tiny_v25_model_dir() -> Path:
    """Built once per test session; files are links into the reference set (never write into them)."""
    return _session_folder("indextts-tiny-v25-", write_tiny_v25_model_dir)


def mirror_model_dir(dst: Path, *, without: str) -> Path:
    """A copy of the tiny model folder lacking the file ``without`` (a manifest path). Its files are links to the
    reference set: replace a file (unlink, then write) rather than write into it."""
    src = tiny_model_dir()
    for path in src.rglob("*"):
        rel = path.relative_to(src).as_posix()
        if path.is_file() and rel != without:
            _place(path, dst / rel)
    return dst


def write_clip(path: Path, seconds: float = 2.0, freq: float = 180.0, seed: int = 0, sr: int = 24000) -> Path:
    """A voiced-sounding test clip (amplitude-modulated tone + a little noise)."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    wave = tone + 0.02 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread while these tests run (the CLI subprocesses get OMP_NUM_THREADS=1 too): on a small,
    shared machine OpenMP's barrier waits make the many tiny ops here several times slower with 2 threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
