"""The local API's key: generated on first start, kept in the user config folder, readable by the user only.

``ensure_key()`` returns the stored key (creating it once), ``rotate_key()`` replaces it, ``resolve_key()`` picks
``--api-key``, then ``$INDEXTTS_API_KEY``, then the stored key. Writes are atomic (temp file in the same folder,
mode 0600, then rename), so a crash never leaves a half-written key.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..api import EngineError
from ..dirs import user_folder

log = logging.getLogger(__name__)

KEY_FILE = "api_key"
KEY_ENV = "INDEXTTS_API_KEY"
MIN_KEY_LENGTH = 16


def key_path(config_dir: Path | None = None) -> Path:
    return (config_dir or user_folder("config")) / KEY_FILE


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "itts-" + secrets.token_urlsafe(32)


def _write_private(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".api_key-", dir=path.parent)  # created 0600
    except OSError as exc:
        raise EngineError(f"Cannot store the API key in {path.parent}: {exc.strerror or exc}.") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise EngineError(f"Cannot store the API key in {path}: {exc.strerror or exc}.") from exc
        raise


def load_key(path: Path | None = None) -> str | None:
    """The stored key, or None when there is none yet. A file others can read is made private again."""
    path = path or key_path()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"Cannot read the API key file {path}: {exc}. Delete it to get a new key.") from exc
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("the API key file %s was readable by others; making it private", path)
        os.chmod(path, 0o600)
    if len(text) < MIN_KEY_LENGTH:
        raise EngineError(f"The API key in {path} is too short (under {MIN_KEY_LENGTH} characters). "
                          "Rotate the key or delete the file to get a new one.")
    return text


def ensure_key(path: Path | None = None) -> str:
    """The stored key; on first use a new one is generated and stored."""
    path = path or key_path()
    key = load_key(path)
    if key is None:
        key = new_key()
        _write_private(path, key)
        log.info("generated a new API key in %s", path)
    return key


def rotate_key(path: Path | None = None) -> str:
    """Replace the stored key with a new one (clients using the old key get 401 from then on)."""
    path = path or key_path()
    key = new_key()
    _write_private(path, key)
    log.info("rotated the API key in %s", path)
    return key


def resolve_key(explicit: str | None = None, env: Mapping[str, str] | None = None,
                path: Path | None = None) -> tuple[str, str]:
    """``(key, where it came from)``: ``explicit`` (--api-key), then ``$INDEXTTS_API_KEY``, then the key file."""
    env = os.environ if env is None else env
    for key, where in ((explicit, "--api-key"), (env.get(KEY_ENV), f"${KEY_ENV}")):
        if key is not None:
            key = key.strip()
            if len(key) < MIN_KEY_LENGTH:
                raise EngineError(f"The API key from {where} is too short: use at least {MIN_KEY_LENGTH} characters.")
            return key, where
    path = path or key_path()
    return ensure_key(path), str(path)
