"""Atomic file writes shared by every front end and the project package (torch-free, no CLI imports)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .api import EngineError


def write_wav_atomic(path: Path, audio, sample_rate: int, *, overwrite: bool = False, durable: bool = False) -> Path:
    """Write int16 mono WAV via a temp file in the same folder + rename; never clobber unless asked."""
    import soundfile as sf

    def write(tmp: Path) -> None:
        sf.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")

    return write_atomic(path, write, overwrite=overwrite, durable=durable)


def write_atomic(path: Path, write: Callable[[Path], None], *, overwrite: bool = False,
                 durable: bool = False) -> Path:
    """``write(temp)`` fills a temp file in ``path``'s folder, which then replaces ``path`` in one rename, so a
    reader sees the old file or the complete new one, never a part. ``durable``: the data and the rename are
    on disk (fsync) before this returns. OSError (disk full, no permission) becomes an EngineError."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise EngineError(f"{path} already exists; choose another name or pass --overwrite.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise EngineError(f"Output folder {parent} does not exist.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix + ".part", dir=parent)
    except OSError as exc:
        raise EngineError(f"Cannot write to {parent}: {exc.strerror or exc}.") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should be an ordinary file
        if durable:
            _fsync(Path(tmp))
        os.replace(tmp, path)
        if durable:
            _fsync(parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise EngineError(f"Could not write {path}: {exc.strerror or exc}.") from exc
        raise
    return path


def _fsync(path: Path) -> None:
    """Flush a file (or, where the OS allows, a folder's entries) to disk."""
    if path.is_dir() and os.name == "nt":
        return  # Windows cannot open a folder for fsync; its renames are journaled
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """Fail before any work when ``folder`` cannot take a new file (read-only, no permission, full disk)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".indextts-probe-", dir=folder)
    except OSError as exc:
        raise EngineError(f"Cannot write to the output folder {folder}: {exc.strerror or exc}. "
                          "Choose another --out location.") from None
    os.close(fd)
    os.unlink(probe)
