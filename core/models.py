"""Where the IndexTTS-2 model files are, whether they are intact, and how to fetch them.

Layout (upstream's, reused unchanged)::

    <model_dir>/config.yaml gpt.pth s2mel.pth bpe.model wav2vec2bert_stats.pt feat1.pt feat2.pt
    <model_dir>/qwen0.6bemo4-merge/...                 (emotion from text; optional)
    <model_dir>/hf_cache/w2v-bert-2.0/{config.json,model.safetensors}
    <model_dir>/hf_cache/semantic_codec_model.safetensors
    <model_dir>/hf_cache/campplus_cn_common.bin
    <model_dir>/hf_cache/bigvgan/{config.json,bigvgan_generator.pt}

Auxiliary files already in the standard HuggingFace cache are used from there (never downloaded twice).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .digest import sha256_file

log = logging.getLogger(__name__)

APP_NAME = "IndexTTS2 Desktop"
MAIN_REPO = "IndexTeam/IndexTTS-2"
MODELSCOPE_REPOS = {  # HF repo -> ModelScope model id, where they differ
    "funasr/campplus": "iic/speech_campplus_sv_zh-cn_16k-common",
    "facebook/w2v-bert-2.0": "AI-ModelScope/w2v-bert-2.0",
}


@dataclass(frozen=True)
class ModelFile:
    repo: str
    remote: str  # path inside the repo
    local: str  # path relative to the model folder
    what: str
    size: int | None = None
    sha256: str | None = None
    optional: bool = False  # only for emotion-from-text
    may_be_absent: bool = False  # not in every revision of the repo: a 404 is not an error
    revision: str | None = None  # a pinned commit of the repo (None: its main branch)


_Q = "qwen0.6bemo4-merge"
MANIFEST: tuple[ModelFile, ...] = (
    ModelFile(MAIN_REPO, "config.yaml", "config.yaml", "IndexTTS-2 config"),
    ModelFile(MAIN_REPO, "bpe.model", "bpe.model", "text tokenizer (BPE)", 475997,
              "b2a5ce8090d32da3642cc4f81fdc996376bc6dd3f4cd5e3d165f71120d9f2bc8"),
    ModelFile(MAIN_REPO, "gpt.pth", "gpt.pth", "GPT (UnifiedVoice v2)"),
    ModelFile(MAIN_REPO, "s2mel.pth", "s2mel.pth", "s2mel (flow matching)"),
    ModelFile(MAIN_REPO, "wav2vec2bert_stats.pt", "wav2vec2bert_stats.pt", "w2v-BERT statistics", 9343,
              "c9c176c2b8850ab2e3ba828bbfa969deaf4566ce55db5f2687b8430b87526ad2"),
    # feat1/feat2: the SHA-256 pins published so far are those of the IndexTTS-2.5 repo, so only the sizes are
    # pinned; a download is still checked against the hub's own SHA-256 (the LFS etag), see _fetch.
    ModelFile(MAIN_REPO, "feat1.pt", "feat1.pt", "speaker emotion matrix", 57170),
    ModelFile(MAIN_REPO, "feat2.pt", "feat2.pt", "emotion matrix", 374866),
    ModelFile(MAIN_REPO, f"{_Q}/config.json", f"{_Q}/config.json", "QwenEmotion config", optional=True),
    ModelFile(MAIN_REPO, f"{_Q}/model.safetensors", f"{_Q}/model.safetensors", "QwenEmotion weights", optional=True),
    ModelFile(MAIN_REPO, f"{_Q}/tokenizer.json", f"{_Q}/tokenizer.json", "QwenEmotion tokenizer", optional=True),
    ModelFile(MAIN_REPO, f"{_Q}/tokenizer_config.json", f"{_Q}/tokenizer_config.json", "QwenEmotion tokenizer config",
              optional=True),
    ModelFile(MAIN_REPO, f"{_Q}/generation_config.json", f"{_Q}/generation_config.json",
              "QwenEmotion generation config", optional=True, may_be_absent=True),
    # the template the emotion prompt is rendered with: required whenever the Qwen folder is used
    ModelFile(MAIN_REPO, f"{_Q}/chat_template.jinja", f"{_Q}/chat_template.jinja", "QwenEmotion chat template",
              optional=True),
    ModelFile("facebook/w2v-bert-2.0", "config.json", "hf_cache/w2v-bert-2.0/config.json", "w2v-BERT 2.0 config"),
    ModelFile("facebook/w2v-bert-2.0", "model.safetensors", "hf_cache/w2v-bert-2.0/model.safetensors",
              "w2v-BERT 2.0 weights", 2322063736),
    ModelFile("amphion/MaskGCT", "semantic_codec/model.safetensors", "hf_cache/semantic_codec_model.safetensors",
              "MaskGCT semantic codec"),
    ModelFile("funasr/campplus", "campplus_cn_common.bin", "hf_cache/campplus_cn_common.bin",
              "CAMPPlus speaker encoder"),
    ModelFile("nvidia/bigvgan_v2_22khz_80band_256x", "config.json", "hf_cache/bigvgan/config.json", "BigVGAN config"),
    ModelFile("nvidia/bigvgan_v2_22khz_80band_256x", "bigvgan_generator.pt", "hf_cache/bigvgan/bigvgan_generator.pt",
              "BigVGAN vocoder"),
)


# IndexTTS-2.5 (IndexTeam/IndexTTS-2.5), installed next to 2.0 in the subfolder V25_SUBDIR of the model folder; the
# helper models (hf_cache/: w2v-BERT, CAMPPlus, BigVGAN) are 2.0's, shared (V25_SHARED). Revision, sizes and the
# vocabulary's SHA-256 from the third-party download manifests pinned to that revision and the CosyVoice file the
# vocabulary is (../shared/reference/v2_5/README.md "Vocabulary file provenance", UPSTREAM.md section 1): only
# hash prefixes of gpt/codec/s2mel/config/feat are public, so those are checked by size and by the hub's own
# SHA-256 (LFS etag) at download; wav2vec2bert_stats.pt is byte-identical to 2.0's (same pin).
V25_REPO = "IndexTeam/IndexTTS-2.5"
V25_REVISION = "c39ce5ba981572cb187443877ff559dfb246ce63"
V25_SUBDIR = "IndexTTS-2.5"
V25_VOCAB = "multilingual_zh_ja_yue_char_del.tiktoken"


def _v25(remote: str, what: str, size: int | None = None, sha256: str | None = None) -> ModelFile:
    return ModelFile(V25_REPO, remote, remote, what, size, sha256, revision=V25_REVISION)


V25_MANIFEST: tuple[ModelFile, ...] = (
    _v25("config.yaml", "IndexTTS-2.5 config", 2860),
    _v25("gpt.pth", "GPT (UnifiedVoice 2.5, CAMPPlus conditioning)", 3_259_599_833),
    _v25("codec.pth", "EnhancedCodec (25 Hz codes)", 607_290_935),
    _v25("s2mel.pth", "s2mel (flow matching)", 414_908_601),
    _v25(V25_VOCAB, "text vocabulary (tiktoken, five languages)", 907_395,
         "747979631e813193436aabcff7c1c235d37de8097b71c563ec8b63b7a515c718"),
    _v25("feat1.pt", "speaker emotion matrix", 57170),
    _v25("feat2.pt", "emotion matrix", 374866),
    _v25("wav2vec2bert_stats.pt", "w2v-BERT statistics", 9343,
         "c9c176c2b8850ab2e3ba828bbfa969deaf4566ce55db5f2687b8430b87526ad2"),
)
V25_SHARED: tuple[ModelFile, ...] = tuple(m for m in MANIFEST if m.local.startswith("hf_cache/"))
MODEL_VERSIONS = ("2.0", "2.5")


def version_dir(model_dir: str | Path, version: str) -> Path:
    """Where ``version`` lives for the model folder ``model_dir``: 2.0 in the folder itself, 2.5 in its subfolder
    V25_SUBDIR (or the folder itself when it is a 2.5 folder already)."""
    folder = Path(model_dir)
    if version == "2.0" or is_v25_dir(folder):
        return folder
    return folder / V25_SUBDIR


def is_v25_dir(folder: str | Path) -> bool:
    """The folder holds IndexTTS-2.5: its ``codec.pth`` (the version is told by the files, never config.yaml)."""
    return (Path(folder) / "codec.pth").is_file()


def installed_versions(model_dir: str | Path) -> list[str]:
    """The versions whose config is present for this model folder (a model picker's choices)."""
    return [v for v in MODEL_VERSIONS if (version_dir(model_dir, v) / "config.yaml").is_file()]


def version_parts(model_dir: str | Path, version: str) -> list[tuple[Path, tuple[ModelFile, ...]]]:
    """``(folder, manifest)`` pairs to check or download for ``version``: 2.0 is the model folder's MANIFEST; 2.5 is
    the shared helper models in the model folder plus V25_MANIFEST in its folder (core.models.version_dir)."""
    base = Path(model_dir)
    if version == "2.0":
        return [(base, MANIFEST)]
    return [(base, V25_SHARED), (version_dir(base, version), V25_MANIFEST)]


def shared_file(folder: str | Path, item: ModelFile) -> Path:
    """A helper model of a 2.5 folder: its own copy, else the 2.0 folder's it sits in, else the HF cache's."""
    folder = Path(folder)
    if (folder / item.local).exists() or not (folder.parent / item.local).exists():
        return resolve(folder, item)
    return folder.parent / item.local


class ModelSetupError(RuntimeError):
    """Model files missing/corrupt, or a download failed; the message says which file and what to do."""


def default_model_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / "checkpoints"


def locate_model_dir(explicit: str | Path | None = None, settings_dir: str | Path | None = None) -> Path:
    """An explicit folder, then ``$INDEXTTS_MODEL_DIR``, then the app's setting, then the platform data dir."""
    for candidate in (explicit, os.environ.get("INDEXTTS_MODEL_DIR"), settings_dir):
        if candidate:
            return Path(candidate).expanduser()
    return default_model_dir()


def _hf_cached(repo: str, remote: str) -> Path | None:
    """The file from the standard HF cache, if it is there (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - dependency
        return None
    found = try_to_load_from_cache(repo, remote)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def resolve(model_dir: Path, item: ModelFile) -> Path:
    """Where ``item`` is: the model folder, else the standard HF cache, else its (missing) model-folder path."""
    local = Path(model_dir) / item.local
    if local.exists() or item.repo == MAIN_REPO:
        return local
    return _hf_cached(item.repo, item.remote) or local


@dataclass
class ModelPaths:
    config: Path
    gpt: Path
    s2mel: Path
    bpe: Path
    w2v_stats: Path
    feat1: Path
    feat2: Path
    w2v_bert: Path | None  # HF dir; None when features are given (tests)
    semantic_codec: Path
    campplus: Path
    bigvgan: Path  # dir with config.json + bigvgan_generator.pt
    qwen: Path | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> ModelPaths:
        from .config import load_config

        model_dir = Path(model_dir)
        cfg = load_config(model_dir / "config.yaml")
        by_local = {m.local: resolve(model_dir, m) for m in MANIFEST}
        qwen = model_dir / cfg.qwen_emo_path.strip().rstrip("/")
        return cls(
            config=cfg.path,
            gpt=model_dir / cfg.gpt_checkpoint,
            s2mel=model_dir / cfg.s2mel_checkpoint,
            bpe=model_dir / cfg.bpe_model,
            w2v_stats=model_dir / cfg.w2v_stat,
            feat1=model_dir / cfg.spk_matrix,
            feat2=model_dir / cfg.emo_matrix,
            w2v_bert=by_local["hf_cache/w2v-bert-2.0/model.safetensors"].parent,
            semantic_codec=by_local["hf_cache/semantic_codec_model.safetensors"],
            campplus=by_local["hf_cache/campplus_cn_common.bin"],
            bigvgan=by_local["hf_cache/bigvgan/bigvgan_generator.pt"].parent,
            qwen=qwen if (qwen / "config.json").is_file() else None,
        )


# ----------------------------------------------------------------------------------------------- checking


@dataclass
class FileStatus:
    item: ModelFile
    path: Path
    state: str  # "ok" | "missing" | "partial" | "corrupt"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def _structure_problem(path: Path) -> str | None:
    """A cheap integrity check by format: torch zips need their central directory, safetensors their data."""
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix in (".pth", ".pt", ".bin"):
        if head[:2] == b"PK" and not zipfile.is_zipfile(path):
            return "truncated torch archive (no zip directory)"
        if head[:2] != b"PK" and head[:1] != b"\x80":
            return "not a torch checkpoint"
    elif path.suffix == ".safetensors":
        if len(head) < 8:
            return "truncated safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return "truncated safetensors header"
        with open(path, "rb") as fh:
            fh.seek(8)
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return "corrupt safetensors header"
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            return f"truncated ({size} of {8 + n + end} bytes)"
        if 8 + n + end < size:
            return f"size {size} does not match its header ({8 + n + end} bytes expected)"
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "not valid JSON"
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            if not isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict):
                return "not a YAML mapping"
        except (yaml.YAMLError, UnicodeDecodeError):
            return "not valid YAML"
    elif path.suffix == ".model":
        import sentencepiece

        try:
            sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError):
            return "not a readable SentencePiece model (truncated or corrupt)"
    return None


def check_file(path: Path, item: ModelFile, *, verify: bool = False) -> FileStatus:
    """Presence and format integrity; with ``verify`` also the manifest's size and SHA-256 (where known)."""
    if not path.is_file():
        return FileStatus(item, path, "missing")
    size = path.stat().st_size
    if verify and item.size is not None and size < item.size:
        return FileStatus(item, path, "partial", f"{size} of {item.size} bytes")
    if verify and item.size is not None and size > item.size:
        return FileStatus(item, path, "corrupt", f"{size} bytes, expected {item.size}")
    problem = _structure_problem(path)
    if problem:
        return FileStatus(item, path, "partial" if "truncated" in problem else "corrupt", problem)
    if verify and item.sha256 and sha256_file(path) != item.sha256:
        return FileStatus(item, path, "corrupt", "SHA-256 does not match the official file")
    return FileStatus(item, path, "ok")


def check(model_dir: str | Path, *, verify: bool = False, include_optional: bool = True,
          manifest: tuple[ModelFile, ...] = MANIFEST) -> list[FileStatus]:
    """The state of every manifest file. The plain check reads formats only (fast, works for any build of
    the models); ``verify`` also compares sizes and SHA-256 with the official release."""
    model_dir = Path(model_dir)
    return [
        check_file(resolve(model_dir, item), item, verify=verify)
        for item in manifest
        if include_optional or not item.optional
    ]


def problems(statuses: list[FileStatus], *, include_optional: bool = False) -> list[FileStatus]:
    return [s for s in statuses if not s.ok and (include_optional or not s.item.optional)
            and not (s.item.may_be_absent and s.state == "missing")]


def describe(status: FileStatus) -> str:
    extra = f" ({status.detail})" if status.detail else ""
    return f"{status.state:8s} {status.item.local}  [{status.item.what}]{extra}"


# --------------------------------------------------------------------------------------------- download

ByteProgress = Callable[[str, int, int | None], None]  # (file, bytes done, bytes total)


class DownloadCancelled(ModelSetupError):
    pass


def _tqdm_class(name: str, on_bytes: ByteProgress | None, cancel: threading.Event | None):
    from tqdm.auto import tqdm as base

    class Progress(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("Download cancelled.")
            self._done += int(n or 0)
            if on_bytes is not None:
                on_bytes(name, self._done, self.total)
            return super().update(n)

    return Progress


def download(
    model_dir: str | Path,
    *,
    source: str = "hf",
    endpoint: str | None = None,
    include_optional: bool = True,
    on_bytes: ByteProgress | None = None,
    on_file: Callable[[int, int, ModelFile], None] | None = None,
    cancel: threading.Event | None = None,
    manifest: tuple[ModelFile, ...] = MANIFEST,
) -> list[FileStatus]:
    """Fetch every missing/partial/corrupt file; returns the final check.

    Each file is downloaded into ``<model_dir>/.download`` (huggingface_hub resumes interrupted transfers
    there), verified (size, structure, SHA-256 against the manifest or the hub's LFS etag), and only then
    moved into place. ``endpoint`` (or ``$HF_ENDPOINT``) selects a mirror; ``source="modelscope"`` uses
    ModelScope's HF-compatible endpoint when the ``modelscope`` package is not installed.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / ".download"
    todo = [s for s in check(model_dir, include_optional=include_optional, manifest=manifest, verify=True) if not s.ok]
    for index, status in enumerate(todo):
        item = status.item
        if on_file is not None:
            on_file(index, len(todo), item)
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled("Download cancelled.")
        target = model_dir / item.local
        try:
            fetched = _fetch(item, staging, source=source, endpoint=endpoint, on_bytes=on_bytes, cancel=cancel)
        except _NotOnServer:
            if item.may_be_absent:
                log.info("%s is not in %s; skipped", item.remote, item.repo)
                continue
            raise ModelSetupError(f"{item.remote} is not in {item.repo} (HTTP 404). The repository layout may have "
                                  "changed; update IndexTTS2 Desktop.") from None
        result = check_file(fetched, item, verify=True)
        if not result.ok:
            fetched.unlink(missing_ok=True)
            raise ModelSetupError(
                f"Downloaded {item.local} is {result.state} ({result.detail}); it was removed. Run the download again."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, target)
        log.info("installed %s", target)
    shutil.rmtree(staging, ignore_errors=True)  # resume state is only kept after a failure
    return check(model_dir, include_optional=include_optional, manifest=manifest)


def _source_repo(item: ModelFile, source: str, endpoint: str | None) -> tuple[str, str | None]:
    """(repo id, endpoint) for a download source: ``hf`` (or a mirror endpoint) or ``modelscope``."""
    if source == "modelscope":
        return MODELSCOPE_REPOS.get(item.repo, item.repo), endpoint or "https://www.modelscope.cn/models"
    if source != "hf":
        raise ModelSetupError(f"Unknown download source {source!r}; use 'hf' or 'modelscope'.")
    return item.repo, endpoint


def remote_size(item: ModelFile, source: str = "hf", endpoint: str | None = None, timeout: float = 10.0) -> int | None:
    """The file's size from the manifest, else from the server's answer; None when unknown (never raises)."""
    if item.size is not None:
        return item.size
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        repo, endpoint = _source_repo(item, source, endpoint)
        return get_hf_file_metadata(hf_hub_url(repo, item.remote, endpoint=endpoint), timeout=timeout).size
    except Exception as exc:  # noqa: BLE001 - sizes only feed progress displays
        log.info("size of %s unknown: %s", item.local, exc)
        return None


def etag_sha256(etag: str | None) -> str | None:
    """The SHA-256 an ETag carries, or None. The hub's etag of an LFS file (every ``.pt``/``.pth``/``.bin``/
    ``.safetensors`` of the release) is the SHA-256 of its content; a small git-stored file's is a git blob id."""
    tag = (etag or "").strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"').lower()
    return tag if len(tag) == 64 and all(c in "0123456789abcdef" for c in tag) else None


def _fetch(item: ModelFile, staging: Path, *, source: str, endpoint: str | None, on_bytes: ByteProgress | None,
           cancel: threading.Event | None) -> Path:
    """Download one file into ``staging`` as ``<name>.part``, resuming a previous partial transfer of the same
    revision (by etag), and return it once complete and matching the hub's checksum."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    repo, endpoint = _source_repo(item, source, endpoint)
    part = staging / repo.replace("/", "--") / (item.remote + ".part")
    tag_file = part.with_name(part.name + ".etag")
    try:
        url = hf_hub_url(repo, item.remote, endpoint=endpoint, revision=item.revision)
        meta = get_hf_file_metadata(url, timeout=30)
        etag = (meta.etag or "").strip('"')
        part.parent.mkdir(parents=True, exist_ok=True)
        resume = part.stat().st_size if part.exists() else 0
        if resume and (not tag_file.exists() or tag_file.read_text() != etag or (meta.size and resume > meta.size)):
            part.unlink()  # a different revision (or garbage): start over
            resume = 0
        tag_file.write_text(etag)
        if not meta.size or resume < meta.size:
            with open(part, "ab") as fh:
                http_get(meta.location or url, fh, resume_size=resume, headers=build_hf_headers(),
                         expected_size=meta.size, tqdm_class=_tqdm_class(item.local, on_bytes, cancel))
        want = etag_sha256(etag)
        if want is None:
            log.info("%s: the server gave no SHA-256 etag (%r); only the manifest pins and the format are checked",
                     item.local, etag)
        elif sha256_file(part) != want:
            part.unlink(missing_ok=True)
            raise ModelSetupError(f"{item.local}: the downloaded data does not match the server's checksum and was "
                                  "removed. Run the download again.")
        tag_file.unlink(missing_ok=True)
        return part
    except (DownloadCancelled, ModelSetupError):
        raise
    except HfHubHTTPError as exc:
        if _status(exc) == "HTTP 404":
            raise _NotOnServer() from exc
        raise ModelSetupError(
            f"Could not download {item.remote} from {repo}: the server answered {_status(exc)}. "
            "Check the internet connection (or set HF_ENDPOINT to a mirror) and try again; finished files are kept."
        ) from exc
    except Exception as exc:  # network errors surface with several types (httpx, OSError, ...)
        if _is_cancel(exc):
            raise DownloadCancelled("Download cancelled.") from exc
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        kept = " the partial download is kept and will be resumed." if part.exists() and part.stat().st_size else ""
        raise ModelSetupError(
            f"Could not download {item.remote} from {repo} ({first}). Check the internet connection and try "
            f"again;{kept or ' finished files are kept.'}"
        ) from exc


class _NotOnServer(Exception):
    pass


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else type(exc).__name__


def _is_cancel(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, DownloadCancelled):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
