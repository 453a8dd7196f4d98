"""``project.json`` on disk: versioned, human-readable, written atomically (and durably) after every change.

Before each save the previous file becomes ``project.json.bak`` (the last good copy). A ``project.json`` that
cannot be used (invalid JSON, not a project, written by a newer version) is never overwritten: it is moved
aside to ``project.json.unreadable-<time>`` and the last good copy is opened with a notice; without a usable
copy, opening fails with a message naming the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..api import EngineError
from ..files import check_writable, write_atomic
from .lock import ProjectLock

if TYPE_CHECKING:
    from .model import Project

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROJECT_FILE = "project.json"
BACKUP_FILE = "project.json.bak"
TAKES_DIR = "takes"


class ProjectFileError(EngineError):
    """project.json cannot be used (the message says which file and why)."""


def create(project: Project) -> Project:
    folder = project.folder
    if (folder / PROJECT_FILE).exists() or (folder / BACKUP_FILE).exists():
        raise EngineError(f"{folder} already holds a project; open it, or choose an empty folder for a new one.")
    try:
        (folder / TAKES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(f"Cannot create the project folder {folder}: {exc.strerror or exc}.") from None
    check_writable(folder)
    _take_lock(project, read_only=False)
    if project.read_only:
        raise EngineError(f"The project folder {folder} is in use by another process.")
    save(project)
    return project


def open_project(cls: type[Project], folder: Path, *, read_only: bool = False) -> Project:
    if not folder.is_dir():
        raise EngineError(f"No project folder {folder}.")
    data, notices = _read(folder)
    project = cls.from_data(folder, data)
    project.notices.extend(notices)
    _take_lock(project, read_only)
    if not project.read_only:
        _clean_partials(folder)
        if notices:
            save(project)  # the last good copy becomes project.json again
    return project


def _take_lock(project: Project, read_only: bool) -> None:
    if read_only:
        project.read_only = True
        return
    lock = ProjectLock(project.folder)
    try:
        got = lock.acquire()
    except OSError as exc:
        project.read_only = True
        project.notices.append(f"The project folder {project.folder} is not writable ({exc.strerror or exc}); "
                               "it is open read-only.")
        return
    if not got:
        project.read_only = True
        project.notices.append(f"The project {project.folder} is already open in {lock.holder()}; it is open "
                               "read-only here. Close it there to edit or render it.")
        return
    project._file_lock = lock


def _clean_partials(folder: Path) -> None:
    """Temp files of writes a crash interrupted (never takes: a take is recorded only once complete)."""
    for part in [*folder.glob(".*.part"), *(folder / TAKES_DIR).glob(".*.part")]:
        try:
            part.unlink()
        except OSError:
            pass


def _read(folder: Path) -> tuple[dict[str, Any], list[str]]:
    main, backup = folder / PROJECT_FILE, folder / BACKUP_FILE
    try:
        return _parse(main), []
    except ProjectFileError as exc:
        problem = exc
    if not backup.exists():
        raise problem
    try:
        data = _parse(backup)
    except ProjectFileError as exc:
        raise ProjectFileError(f"{problem} The last good copy cannot be used either: {exc}") from None
    notice = f"{problem} Opened the last good copy ({BACKUP_FILE})."
    if main.exists():
        kept = folder / f"{PROJECT_FILE}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            os.replace(main, kept)
            notice += f" The unreadable file is kept as {kept.name}."
        except OSError as exc:
            raise ProjectFileError(f"{problem} It cannot be moved aside to open the last good copy: "
                                   f"{exc.strerror or exc}.") from None
    log.warning(notice)
    return data, [notice]


def _parse(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ProjectFileError(f"{path} is missing.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectFileError(f"{path} cannot be read: {exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectFileError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") \
            from None
    if not isinstance(data, dict) or "schema_version" not in data or "lines" not in data:
        raise ProjectFileError(f"{path} is not an IndexTTS2 project (no schema_version or lines).")
    version = data["schema_version"]
    if not isinstance(version, int) or version < 1:
        raise ProjectFileError(f"{path} has an invalid schema_version {version!r}.")
    if version > SCHEMA_VERSION:
        raise ProjectFileError(f"{path} was written by a newer IndexTTS2 Desktop (project format {version}; this "
                               f"version reads up to {SCHEMA_VERSION}). Update the app to open it.")
    return data


def save(project: Project) -> None:
    """Write project.json atomically and durably; the file it replaces becomes project.json.bak."""
    if project.read_only:
        raise EngineError(f"The project {project.folder} is open read-only; changes cannot be saved.")
    folder = project.folder
    data = dumps(project.to_dict()).encode("utf-8")
    main = folder / PROJECT_FILE
    if main.exists():
        _backup(main, folder / BACKUP_FILE)

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    write_atomic(main, write, overwrite=True, durable=True)


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def dumps(data: dict[str, Any]) -> str:
    """The project as readable JSON: the top-level fields indented, one line of JSON per project line (fast: the
    C encoder serialises each line; a book of thousands of lines saves in milliseconds)."""
    head = {k: v for k, v in data.items() if k != "lines"}
    text = json.dumps(head, ensure_ascii=False, indent=1)
    rows = ",\n  ".join(map(_ENCODE, data["lines"]))
    body = f'"lines": [\n  {rows}\n ]' if rows else '"lines": []'
    return f"{text[:-2]},\n {body}\n}}\n"


def _backup(main: Path, backup: Path) -> None:
    """``backup`` becomes the current ``main`` (a hard link where the file system has them: no copy)."""
    tmp = backup.with_name(f".{backup.name}.part")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(main, tmp)
        except OSError:
            shutil.copyfile(main, tmp)
        os.replace(tmp, backup)
    except OSError as exc:
        raise EngineError(f"Cannot keep the last good copy {backup}: {exc.strerror or exc}.") from None


def copy_takes(src: Path, dst: Path, files: list[str]) -> None:
    """Copy take files (relative paths) from one project folder to another."""
    for rel in files:
        a, b = src / rel, dst / rel
        try:
            b.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(a, b)
        except OSError as exc:
            raise EngineError(f"Cannot copy {a} to {b}: {exc.strerror or exc}.") from None


def check_empty(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise EngineError(f"{folder} is not empty; choose an empty or new folder to save the project as.")
