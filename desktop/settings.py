"""The app's settings model: presets, the Settings-dialog values and the last-used state.

Stored as JSON files in the user config folder through :mod:`desktop.jsonstore` (atomic writes, corrupt
files set aside). A preset that cannot be used raises :class:`PresetError` naming the file and the reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.api import GenerationSettings
from core.device import DEVICES, FP16_ON_CUDA
from desktop.jsonstore import JsonFileError, read_json, read_object_or_set_aside, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PRESET_FORMAT = "indextts2-desktop-preset"


class PresetError(JsonFileError):
    """A preset file is missing, unreadable or not a valid preset."""


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
        return {"format": PRESET_FORMAT, "version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, source: str) -> Preset:
        if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
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
        try:
            data = read_json(path)
        except JsonFileError as exc:
            raise PresetError(str(exc)) from exc
        return Preset.from_json(data, source=path.name)

    def delete(self, name: str) -> None:
        self.path_for(name).unlink(missing_ok=True)


@dataclass
class AppSettings:
    """Settings from the Settings dialog (``settings.json``)."""

    model_dir: str = ""
    model_version: str = "2.0"  # the studio's model picker: IndexTTS "2.0" or "2.5" (core.models.version_dir)
    device: str = "auto"  # one of core.device.DEVICES: auto | cuda | cpu | mps
    fp16: bool = FP16_ON_CUDA  # only used on CUDA
    output_dir: str = ""
    input_device: str = ""  # sounddevice name; "" = system default
    output_device: str = ""
    streaming: bool = False  # play while generating
    stream_inside: bool = False  # ... streamed inside segments (GenerationSettings.stream: one beam)
    countdown: int = 3  # seconds before recording starts
    theme: str = "system"  # desktop.theme.THEME_MODES: system (follow the OS), light or dark
    save_format: str = "wav"  # the format the last result was saved in (core.audio_formats.FILE_FORMATS)
    window: str = ""  # the main window's last size and place, "WxH+X+Y" (never restored larger than the screen)
    sash: int = 0  # the studio's divider between text and voice panels, in pixels from the left (0: default)
    local_api: bool = False  # Tools → Local API was on when the app last ran: start it again
    local_api_port: int = 8020  # 0: any free port

    @classmethod
    def from_dict(cls, data: dict) -> AppSettings:
        names = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in data.items() if k in names})
        if settings.device not in DEVICES:
            settings.device = "auto"
        return settings


class StateFiles:
    """``settings.json`` and ``state.json`` (last used text/voice/emotion/settings)."""

    def __init__(self, config_dir: Path) -> None:
        self.settings_path = config_dir / "settings.json"
        self.state_path = config_dir / "state.json"
        self.notes: list[str] = []  # problems met while loading, shown once when the window opens

    def _read(self, path: Path) -> dict:
        data, note = read_object_or_set_aside(path)
        if note:
            self.notes.append(note)
        return data

    def load_settings(self) -> AppSettings:
        try:
            return AppSettings.from_dict(self._read(self.settings_path))
        except TypeError as exc:
            self.notes.append(f"settings.json had unexpected values ({exc}); using defaults.")
            return AppSettings()

    def save_settings(self, settings: AppSettings) -> None:
        write_json(self.settings_path, asdict(settings))

    def load_state(self) -> dict:
        return self._read(self.state_path)

    def save_state(self, state: dict) -> None:
        write_json(self.state_path, state)
