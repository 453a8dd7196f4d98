"""Presets, app settings and the last-used state, as JSON files in the user config folder.

Every write is atomic (temp file in the same folder, fsync, ``os.replace``), so a crash or a full disk
never leaves a half-written file behind. A file that cannot be parsed raises :class:`PresetError` with
the file name and the reason; the app shows it and goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.api import GenerationSettings
from core.device import DEVICES, FP16_ON_CUDA
from desktop.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class PresetError(UserError):
    """A preset/settings file is missing, unreadable or not a valid preset."""


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
        raise PresetError(f"The file {path} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path.name} is not a text file (it is not UTF-8 JSON).") from exc
    except OSError as exc:
        raise PresetError(f"Could not read {path}: {exc.strerror or exc}.") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PresetError(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc


def slugify(name: str, fallback: str = "preset") -> str:
    slug = re.sub(r"[^\w\-]+", "-", name.strip(), flags=re.UNICODE).strip("-_").lower()
    return slug[:60] or fallback


@dataclass
class Preset:
    """Voice + emotion panel state + generation settings, under a name."""

    name: str
    voice: str = ""
    emotion: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": "indextts2-desktop-preset", "version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, source: str) -> Preset:
        if not isinstance(data, dict) or data.get("format") != "indextts2-desktop-preset":
            raise PresetError(
                f"{source} is not an IndexTTS2 Desktop preset (the 'format' field is missing or different)."
            )
        if not isinstance(data.get("name"), str) or not data["name"].strip():
            raise PresetError(f"{source} has no preset name.")
        for key in ("emotion", "settings"):
            if not isinstance(data.get(key, {}), dict):
                raise PresetError(f"{source}: '{key}' must be an object.")
        try:
            GenerationSettings.from_dict(data.get("settings", {})).validate()
        except Exception as exc:  # TypeError for wrong types, EngineError for out-of-range values
            raise PresetError(f"{source} has invalid generation settings: {exc}") from exc
        return cls(
            name=data["name"],
            voice=str(data.get("voice") or ""),
            emotion=data.get("emotion", {}),
            settings=data.get("settings", {}),
        )


class PresetStore:
    """Named presets as ``<config>/presets/<slug>.json``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, name: str) -> Path:
        return self.folder / f"{slugify(name)}.json"

    def names(self) -> list[str]:
        """Names of the readable presets (unreadable files are logged and skipped)."""
        result = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                result.append(self.load_file(path).name)
            except PresetError as exc:
                log.warning("skipping preset file: %s", exc)
        return result

    def save(self, preset: Preset) -> Path:
        path = self.path_for(preset.name)
        write_json(path, preset.to_json())
        log.info("preset %r saved to %s", preset.name, path)
        return path

    def load(self, name: str) -> Preset:
        return self.load_file(self.path_for(name))

    def load_file(self, path: Path) -> Preset:
        return Preset.from_json(read_json(path), source=path.name)

    def delete(self, name: str) -> None:
        self.path_for(name).unlink(missing_ok=True)


@dataclass
class AppSettings:
    """Settings from the Settings dialog (``settings.json``)."""

    model_dir: str = ""
    device: str = "auto"  # one of core.device.DEVICES: auto | cuda | cpu | mps
    fp16: bool = FP16_ON_CUDA  # only used on CUDA
    output_dir: str = ""
    input_device: str = ""  # sounddevice name; "" = system default
    output_device: str = ""
    streaming: bool = False
    countdown: int = 3  # seconds before recording starts
    theme: str = "clam"

    @classmethod
    def from_dict(cls, data: dict) -> AppSettings:
        names = {f.name: f.type for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        settings = cls(**known)
        if settings.device not in DEVICES:
            settings.device = "auto"
        return settings


class StateFiles:
    """``settings.json`` and ``state.json`` (last used text/voice/emotion/settings)."""

    def __init__(self, config_dir: Path) -> None:
        self.settings_path = config_dir / "settings.json"
        self.state_path = config_dir / "state.json"
        self.notes: list[str] = []  # problems met while loading, shown once in the status bar

    def _read_or_quarantine(self, path: Path) -> dict:
        if not path.exists():
            return {}
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise PresetError(f"{path.name} does not hold a JSON object.")
            return data
        except PresetError as exc:
            aside = path.with_suffix(".corrupt.json")
            try:
                os.replace(path, aside)
            except OSError:
                aside = path
            note = f"{exc} It was kept as {aside.name}; starting with defaults."
            log.warning(note)
            self.notes.append(note)
            return {}

    def load_settings(self) -> AppSettings:
        try:
            return AppSettings.from_dict(self._read_or_quarantine(self.settings_path))
        except TypeError as exc:
            self.notes.append(f"settings.json had unexpected values ({exc}); using defaults.")
            return AppSettings()

    def save_settings(self, settings: AppSettings) -> None:
        write_json(self.settings_path, asdict(settings))

    def load_state(self) -> dict:
        return self._read_or_quarantine(self.state_path)

    def save_state(self, state: dict) -> None:
        write_json(self.state_path, state)
