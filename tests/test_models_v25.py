"""IndexTTS-2.5 model setup: the manifest pinned to one revision, downloaded next to 2.0 (the IndexTTS-2.5
subfolder, sharing 2.0's helper models), verified and resumed like 2.0, against a loopback server that answers like
the HF hub."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hub_server import HubServer
from reference import ref
from tiny_models import TINY_MANIFEST, tiny_sources

from core import models
from core.pipeline_v25 import resolve_v25_paths
from core.text.v25_vocab import VOCAB_BYTES, VOCAB_SHA256

CASES = json.loads(ref("v2_5", "e2e", "cases.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def isolated_hf(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def _sources() -> dict[str, Path]:
    """The tiny 2.5 files by manifest path (the vocabulary is the real one)."""
    files = {local: ref("v2_5", "e2e") / info["path"] for local, info in CASES["checkpoints"].items()}
    files["config.yaml"] = ref("v2_5", "e2e", "config.yaml")
    files["wav2vec2bert_stats.pt"] = tiny_sources()["wav2vec2bert_stats.pt"]
    return files


# the tiny files differ from the release: keep only the vocabulary's pins (it is the released file)
MANIFEST = tuple(m if m.local == models.V25_VOCAB else dataclasses.replace(m, size=None, sha256=None)
                 for m in models.V25_MANIFEST)
SHARED = tuple(m for m in TINY_MANIFEST if m.local.startswith("hf_cache/"))


def _serve(hub: HubServer) -> None:
    sources = _sources()
    for m in MANIFEST:
        hub.files[(m.repo, m.remote)] = sources[m.local].read_bytes()
    by_local = tiny_sources()
    for m in SHARED:
        hub.files[(m.repo, m.remote)] = by_local[m.local].read_bytes()


def test_manifest_is_pinned_and_has_the_public_evidence() -> None:
    assert {m.repo for m in models.V25_MANIFEST} == {"IndexTeam/IndexTTS-2.5"}
    assert {m.revision for m in models.V25_MANIFEST} == {"c39ce5ba981572cb187443877ff559dfb246ce63"}
    by = {m.local: m for m in models.V25_MANIFEST}
    assert (by[models.V25_VOCAB].size, by[models.V25_VOCAB].sha256) == (VOCAB_BYTES, VOCAB_SHA256)
    assert (by["gpt.pth"].size, by["codec.pth"].size, by["s2mel.pth"].size) == (3_259_599_833, 607_290_935,
                                                                                 414_908_601)
    two = {m.local: m for m in models.MANIFEST}
    assert by["wav2vec2bert_stats.pt"].sha256 == two["wav2vec2bert_stats.pt"].sha256  # byte-identical to 2.0's
    real = ref("v2_5", "data", models.V25_VOCAB)
    assert models.check_file(real, by[models.V25_VOCAB], verify=True).ok


def test_download_side_by_side_resume_and_load(tmp_path: Path) -> None:
    base = tmp_path / "models"
    with HubServer() as hub:
        _serve(hub)
        key = (models.V25_REPO, "codec.pth")
        hub.fail_next[key] = ["drop"] * 20
        parts = models.version_parts(base, "2.5")
        assert [folder for folder, _ in parts] == [base, base / models.V25_SUBDIR]
        models.download(base, endpoint=hub.endpoint, manifest=SHARED)
        with pytest.raises(models.ModelSetupError) as err:
            models.download(base / models.V25_SUBDIR, endpoint=hub.endpoint, manifest=MANIFEST)
        assert "codec.pth" in str(err.value) and "\n" not in str(err.value)
        assert not (base / models.V25_SUBDIR / "codec.pth").exists()
        hub.fail_next.clear()
        hub.requests.clear()
        statuses = models.download(base / models.V25_SUBDIR, endpoint=hub.endpoint, manifest=MANIFEST)
        assert all(s.ok for s in statuses)
        gets = [(p, r) for m, p, r in hub.requests if m == "GET" and p.endswith("codec.pth")]
        assert gets and gets[0][1] is not None and int(gets[0][1].split("=")[1].split("-")[0]) > 0  # resumed
        assert all(f"/resolve/{models.V25_REVISION}/" in p for m, p, r in hub.requests)  # the pinned revision
    folder = base / models.V25_SUBDIR
    sources = _sources()
    for m in MANIFEST:
        assert (folder / m.local).read_bytes() == sources[m.local].read_bytes(), m.local
    assert not (folder / "hf_cache").exists() and models.installed_versions(base) == ["2.5"]
    paths = resolve_v25_paths(folder)  # the helper models from the 2.0 folder it sits in
    assert paths.campplus == base / "hf_cache/campplus_cn_common.bin" and paths.codec == folder / "codec.pth"


def test_a_changed_vocabulary_is_corrupt(tmp_path: Path) -> None:
    item = next(m for m in models.V25_MANIFEST if m.local == models.V25_VOCAB)
    bad = tmp_path / models.V25_VOCAB
    data = bytearray(ref("v2_5", "data", models.V25_VOCAB).read_bytes())
    data[10] ^= 1
    bad.write_bytes(bytes(data))
    status = models.check_file(bad, item, verify=True)
    assert status.state == "corrupt" and "SHA-256" in status.detail
