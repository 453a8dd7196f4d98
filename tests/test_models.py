"""Model check and the real downloader against a loopback server that answers like the HF hub."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hub_server import HubServer
from reference import ref
from tiny_models import TINY_MANIFEST, make_model_dir, serve_all, tiny_sources

from core import models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_hf(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # never reuse/touch the user's HF cache
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_check_tiny_set_passes_and_names_removed_or_truncated_file(tmp_path):
    d = make_model_dir(tmp_path / "models")
    statuses = models.check(d, include_optional=False)
    assert [s.state for s in statuses] == ["ok"] * len(statuses)
    out = run_cli("models", "check", "--dir", str(d))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All required model files are present" in out.stdout

    (d / "s2mel.pth").unlink()
    out = run_cli("models", "check", "--dir", str(d))
    assert out.returncode == 1
    assert "missing  s2mel.pth" in out.stdout

    make_model_dir(d)
    w = d / "hf_cache/w2v-bert-2.0/model.safetensors"
    w.write_bytes(w.read_bytes()[:-4096])
    g = d / "gpt.pth"
    g.write_bytes(g.read_bytes()[: g.stat().st_size // 3])
    bad = {s.item.local: s for s in models.problems(models.check(d))}
    assert set(bad) == {"hf_cache/w2v-bert-2.0/model.safetensors", "gpt.pth"}
    assert all(s.state == "partial" for s in bad.values())
    out = run_cli("models", "check", "--dir", str(d))
    assert out.returncode == 1 and "gpt.pth" in out.stdout and "model.safetensors" in out.stdout


def test_verify_compares_official_hashes(tmp_path):
    d = make_model_dir(tmp_path / "models")
    bad = {s.item.local for s in models.problems(models.check(d, verify=True))}
    # the tiny stats/feat files differ from the official ones; the real bpe.model matches
    assert {"wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt"} <= bad
    assert "bpe.model" not in bad


def test_complete_download_then_offline(tmp_path):
    d = tmp_path / "models"
    with HubServer() as hub:
        serve_all(hub)
        seen: list[tuple[str, int, int | None]] = []
        files: list[str] = []
        statuses = models.download(d, endpoint=hub.endpoint, manifest=TINY_MANIFEST,
                                   on_bytes=lambda n, a, b: seen.append((n, a, b)),
                                   on_file=lambda i, n, item: files.append(item.local))
        assert all(s.ok for s in statuses)
        assert files == [m.local for m in TINY_MANIFEST]
        for local, src in tiny_sources().items():
            assert (d / local).read_bytes() == src.read_bytes(), local
        gpt_progress = [a for n, a, b in seen if n == "gpt.pth"]
        assert gpt_progress and gpt_progress[-1] == ref("gpt", "gpt.pth").stat().st_size
        assert not (d / ".download").exists()
        count = len(hub.requests)
        again = models.download(d, endpoint=hub.endpoint, manifest=TINY_MANIFEST)
        assert all(s.ok for s in again) and len(hub.requests) == count  # nothing touched the network


def test_resume_after_dropped_connection(tmp_path):
    d = tmp_path / "models"
    key = ("IndexTeam/IndexTTS-2", "gpt.pth")
    manifest = tuple(m for m in TINY_MANIFEST if m.remote == "gpt.pth")
    with HubServer() as hub:
        serve_all(hub)
        # a connection that keeps dropping: a clear error, no half file in place
        hub.fail_next[key] = ["drop"] * 20
        with pytest.raises(models.ModelSetupError) as err:
            models.download(d, endpoint=hub.endpoint, manifest=manifest)
        msg = str(err.value)
        assert "gpt.pth" in msg and "try again" in msg and "\n" not in msg
        assert not (d / "gpt.pth").exists()
        # the next run resumes where the transfer stopped instead of starting over
        hub.fail_next.clear()
        hub.requests.clear()
        statuses = models.download(d, endpoint=hub.endpoint, manifest=manifest)
        assert statuses[0].ok
        assert (d / "gpt.pth").read_bytes() == ref("gpt", "gpt.pth").read_bytes()
        gets = [r for m, p, r in hub.requests if m == "GET" and p.endswith("gpt.pth")]
        assert gets and gets[0] is not None and int(gets[0].split("=")[1].split("-")[0]) > 0


def test_single_drop_is_resumed_within_the_same_download(tmp_path):
    d = tmp_path / "models"
    manifest = tuple(m for m in TINY_MANIFEST if m.remote == "gpt.pth")
    with HubServer() as hub:
        serve_all(hub)
        hub.fail_next[("IndexTeam/IndexTTS-2", "gpt.pth")] = ["drop"]
        assert models.download(d, endpoint=hub.endpoint, manifest=manifest)[0].ok
        ranged = [r for m, p, r in hub.requests if m == "GET" and p.endswith("gpt.pth") and r]
        assert ranged and int(ranged[-1].split("=")[1].split("-")[0]) > 0
    assert (d / "gpt.pth").read_bytes() == ref("gpt", "gpt.pth").read_bytes()


def test_corrupt_download_detected_and_refetched(tmp_path):
    d = tmp_path / "models"
    manifest = tuple(m for m in TINY_MANIFEST if m.remote in ("feat1.pt", "bpe.model"))
    with HubServer() as hub:
        serve_all(hub)
        hub.fail_next[("IndexTeam/IndexTTS-2", "feat1.pt")] = ["corrupt"]
        with pytest.raises(models.ModelSetupError, match="feat1.pt"):
            models.download(d, endpoint=hub.endpoint, manifest=manifest)
        assert not (d / "feat1.pt").exists()
        assert all(s.ok for s in models.download(d, endpoint=hub.endpoint, manifest=manifest))
        assert (d / "feat1.pt").read_bytes() == ref("e2e", "feat1.pt").read_bytes()

        # a damaged file already in place is found by the check and fetched again
        (d / "bpe.model").write_bytes(b"\x00" * 100)
        assert {s.item.local for s in models.problems(models.check(d, manifest=manifest))} == {"bpe.model"}
        assert all(s.ok for s in models.download(d, endpoint=hub.endpoint, manifest=manifest))
        assert (d / "bpe.model").read_bytes() == ref("data", "bpe.model").read_bytes()


def test_server_error_and_missing_file_give_clear_message(tmp_path):
    d = tmp_path / "models"
    manifest = tuple(m for m in TINY_MANIFEST if m.remote == "feat2.pt")
    with HubServer() as hub:
        serve_all(hub)
        hub.fail_next[("IndexTeam/IndexTTS-2", "feat2.pt")] = ["500", "500", "500", "500", "500", "500"]
        with pytest.raises(models.ModelSetupError) as err:
            models.download(d, endpoint=hub.endpoint, manifest=manifest)
        msg = str(err.value)
        assert "feat2.pt" in msg and "IndexTeam/IndexTTS-2" in msg and "\n" not in msg
        hub.fail_next.clear()
        del hub.files[("IndexTeam/IndexTTS-2", "feat2.pt")]
        with pytest.raises(models.ModelSetupError, match="feat2.pt"):
            models.download(d, endpoint=hub.endpoint, manifest=manifest)
    assert not (d / "feat2.pt").exists()


def test_cancel_leaves_no_half_file(tmp_path):
    d = tmp_path / "models"
    manifest = tuple(m for m in TINY_MANIFEST if m.remote == "gpt.pth")
    cancel = threading.Event()
    with HubServer() as hub:
        serve_all(hub)
        gate = threading.Event()
        hub.slow[("IndexTeam/IndexTTS-2", "gpt.pth")] = gate

        def on_bytes(name, done, total):
            if done > 0:
                cancel.set()
                gate.set()

        with pytest.raises(models.DownloadCancelled):
            models.download(d, endpoint=hub.endpoint, manifest=manifest, on_bytes=on_bytes, cancel=cancel)
    assert not (d / "gpt.pth").exists()


def test_locate_model_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("INDEXTTS_MODEL_DIR", str(tmp_path / "env"))
    assert models.locate_model_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert models.locate_model_dir(None, tmp_path / "settings") == tmp_path / "env"
    monkeypatch.delenv("INDEXTTS_MODEL_DIR")
    assert models.locate_model_dir(None, tmp_path / "settings") == tmp_path / "settings"
    assert models.locate_model_dir(None, None) == models.default_model_dir()


def test_upstream_layout_and_hf_cache_reuse(tmp_path, monkeypatch):
    d = make_model_dir(tmp_path / "checkpoints")
    paths = models.ModelPaths.from_model_dir(d)
    assert paths.gpt == d / "gpt.pth" and paths.bigvgan == d / "hf_cache" / "bigvgan"
    assert paths.w2v_bert == d / "hf_cache" / "w2v-bert-2.0"
    # an aux file only in the standard HF cache is used from there
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snap = cache / "models--funasr--campplus" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (cache / "models--funasr--campplus" / "refs").mkdir()
    (cache / "models--funasr--campplus" / "refs" / "main").write_text("abc")
    shutil.copyfile(d / "hf_cache" / "campplus_cn_common.bin", snap / "campplus_cn_common.bin")
    (d / "hf_cache" / "campplus_cn_common.bin").unlink()
    import importlib

    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    importlib.reload(models)
    paths = models.ModelPaths.from_model_dir(d)
    assert paths.campplus == snap / "campplus_cn_common.bin"
    assert not models.problems(models.check(d, include_optional=False))


# ------------------------------------------------------------------ feat1/feat2 pins, hub etag, Qwen template

MAIN = models.MAIN_REPO
BY_LOCAL = {m.local: m for m in models.MANIFEST}
QWEN = "qwen0.6bemo4-merge"


def _torch_file_of_size(path: Path, size: int, seed: int) -> bytes:
    """A loadable torch zip of exactly ``size`` bytes (a float tensor, padded with the zip comment)."""
    import zipfile

    import torch

    rows = (size - 4096) // (4 * 192)
    tensor = torch.randn(rows, 192, generator=torch.Generator().manual_seed(seed))
    torch.save(tensor, path)
    for _ in range(4):  # appending a comment rewrites the central directory: converge on the size
        with zipfile.ZipFile(path, "a") as zf:
            zf.comment = b" " * (len(zf.comment) + size - path.stat().st_size)
        if path.stat().st_size == size:
            break
    assert path.stat().st_size == size
    assert torch.equal(torch.load(path, weights_only=True), tensor)
    return path.read_bytes()


@pytest.mark.parametrize("local", ["feat1.pt", "feat2.pt"])
def test_verify_pins_only_the_size_of_feat1_and_feat2(tmp_path, local):
    item = BY_LOCAL[local]
    assert item.size and item.sha256 is None
    d = make_model_dir(tmp_path / "models")
    path = d / local
    data = _torch_file_of_size(path, item.size, seed=1)
    assert data != ref("data", local).read_bytes()  # not the reference copy of the official file
    statuses = {s.item.local: s for s in models.check(d, verify=True)}
    assert statuses[local].state == "ok", statuses[local].detail  # a good 2.0 file of the right size is kept
    # the size pin still catches a damaged file, and the plain check the format
    path.write_bytes(data[:-10])
    assert models.check_file(path, item, verify=True).state == "partial"
    path.write_bytes(data + b"\0")
    assert models.check_file(path, item, verify=True).state == "corrupt"
    path.write_bytes(b"\x01" * item.size)
    assert models.check_file(path, item, verify=True).state == "corrupt"


def test_etag_sha256():
    sha = "ab" * 32
    assert models.etag_sha256(sha) == sha
    assert models.etag_sha256(f'"{sha.upper()}"') == sha
    assert models.etag_sha256(f'W/"{sha}"') == sha
    assert models.etag_sha256("0123456789abcdef0123456789abcdef01234567") is None  # a git blob id (sha1)
    assert models.etag_sha256("zz" * 32) is None
    assert models.etag_sha256(None) is None and models.etag_sha256("") is None


@pytest.mark.parametrize("local", ["feat1.pt", "feat2.pt"])
def test_feat_download_is_checked_against_the_hub_sha256(tmp_path, local):
    item = BY_LOCAL[local]  # the real manifest entry: size pinned, no SHA-256 of ours
    data = _torch_file_of_size(tmp_path / "src.pt", item.size, seed=2)
    d = tmp_path / "models"
    with HubServer() as hub:
        hub.files[(MAIN, local)] = data
        hub.fail_next[(MAIN, local)] = ["corrupt"]  # right size, wrong bytes: only the etag can tell
        with pytest.raises(models.ModelSetupError, match=rf"{local}: the downloaded data does not match the "
                                                         r"server's checksum") as err:
            models.download(d, endpoint=hub.endpoint, manifest=(item,))
        assert "\n" not in str(err.value)
        assert not (d / local).exists()
        statuses = models.download(d, endpoint=hub.endpoint, manifest=(item,))
        assert [s.state for s in statuses] == ["ok"]
        assert (d / local).read_bytes() == data


def _qwen_folder(d: Path) -> Path:
    q = d / QWEN
    q.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copyfile(ref("qwen_emotion", "tiny_qwen3", name), q / name)
    (q / "tokenizer.json").write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    (q / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}', encoding="utf-8")
    shutil.copyfile(ref("qwen_emotion", "chat_template", "qwen3_chat_template.jinja"), q / "chat_template.jinja")
    return q


def test_qwen_folder_without_chat_template_is_reported_missing(tmp_path):
    assert not BY_LOCAL[f"{QWEN}/chat_template.jinja"].may_be_absent
    assert BY_LOCAL[f"{QWEN}/chat_template.jinja"].optional
    d = make_model_dir(tmp_path / "models")
    q = _qwen_folder(d)
    assert models.problems(models.check(d), include_optional=True) == []
    (q / "chat_template.jinja").unlink()
    bad = models.problems(models.check(d), include_optional=True)
    assert [(s.item.local, s.state) for s in bad] == [(f"{QWEN}/chat_template.jinja", "missing")]
    (q / "generation_config.json").unlink()  # not published with every revision: its absence is no problem
    bad = models.problems(models.check(d), include_optional=True)
    assert [(s.item.local, s.state) for s in bad] == [(f"{QWEN}/chat_template.jinja", "missing")]
    # without emotion-from-text the Qwen folder (template included) is not required
    assert models.problems(models.check(d, include_optional=False)) == []


def test_qwen_download_fails_without_chat_template_on_the_server(tmp_path):
    manifest = tuple(m for m in models.MANIFEST if m.local.startswith(f"{QWEN}/"))
    src = _qwen_folder(tmp_path / "src")
    d = tmp_path / "models"
    with HubServer() as hub:
        for m in manifest:
            if m.remote != f"{QWEN}/generation_config.json":  # absent on the server: skipped
                hub.files[(m.repo, m.remote)] = (src.parent / m.local).read_bytes()
        statuses = models.download(d, endpoint=hub.endpoint, manifest=manifest)
        assert models.problems(statuses, include_optional=True) == []
        assert not (d / QWEN / "generation_config.json").exists()
        assert (d / QWEN / "chat_template.jinja").read_bytes() == (src / "chat_template.jinja").read_bytes()

        (d / QWEN / "chat_template.jinja").unlink()
        del hub.files[(MAIN, f"{QWEN}/chat_template.jinja")]
        with pytest.raises(models.ModelSetupError, match=r"chat_template\.jinja is not in IndexTeam/IndexTTS-2") as err:
            models.download(d, endpoint=hub.endpoint, manifest=manifest)
        assert "\n" not in str(err.value)
