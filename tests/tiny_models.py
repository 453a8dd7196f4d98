"""Tiny reference files laid out like the official release, and a hub-like server serving them."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from core import models
from hub_server import HubServer
from reference import ref


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
    for local, src in tiny_sources().items():
        dst = root / local
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return root


def serve_all(hub: HubServer) -> None:
    by_local = {m.local: m for m in models.MANIFEST}
    for local, src in tiny_sources().items():
        m = by_local[local]
        hub.files[(m.repo, m.remote)] = src.read_bytes()
