"""JSON files in the user's folders: atomic writes, readable errors, corrupt files set aside.

Every write is atomic (temp file in the same folder, fsync, ``os.replace``), so a crash or a full disk
never leaves a half-written file behind. A file that cannot be read or parsed raises :class:`JsonFileError`
naming the file and the reason; :func:`read_object_or_set_aside` keeps a corrupt file under another name and
says so in one sentence, so the app can start with defaults and tell the user.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from desktop.errors import UserError

log = logging.getLogger(__name__)


class JsonFileError(UserError):
    """A JSON file is missing, unreadable or not valid JSON (the message names the file)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see either the old or the new file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise JsonFileError(f"The file {path} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise JsonFileError(f"{path.name} is not a text file (it is not UTF-8 JSON).") from exc
    except OSError as exc:
        raise JsonFileError(f"Could not read {path}: {exc.strerror or exc}.") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonFileError(
            f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc


def read_object_or_set_aside(path: Path) -> tuple[dict, str | None]:
    """The JSON object in ``path`` ({} when there is no file), and a note when the file was corrupt.

    A corrupt file (not JSON, not an object) is renamed to ``<name>.corrupt.json`` so nothing the user had is
    lost; the note says so.
    """
    if not path.exists():
        return {}, None
    try:
        data = read_json(path)
        if not isinstance(data, dict):
            raise JsonFileError(f"{path.name} does not hold a JSON object.")
        return data, None
    except JsonFileError as exc:
        aside = path.with_suffix(".corrupt.json")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        note = f"{exc} It was kept as {aside.name}; starting with defaults."
        log.warning(note)
        return {}, note
