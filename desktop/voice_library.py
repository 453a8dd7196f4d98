"""The voice library: saved reference clips with a name, under ``<data>/voices/<id>/``.

Each voice folder holds ``voice.json`` (name, created, source) and ``reference.wav``. Rename changes
only the name; delete removes the folder. The engine is handed the clip path; it caches the voice
conditioning per clip itself.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from desktop.errors import UserError
from desktop.jsonstore import JsonFileError, read_json, write_json

log = logging.getLogger(__name__)


class VoiceError(UserError):
    """A clip cannot be used as a voice (with the reason in words)."""


@dataclass
class Voice:
    id: str
    name: str
    clip: Path
    created: float
    source: str = ""

    @property
    def folder(self) -> Path:
        return self.clip.parent


def check_clip(path: str | Path) -> sf._SoundFileInfo:
    """Raise :class:`VoiceError` unless ``path`` is a readable, non-empty audio file."""
    p = Path(path)
    if not p.exists():
        raise VoiceError(f"The clip {p} does not exist.")
    if not p.is_file():
        raise VoiceError(f"{p} is a folder, not an audio file.")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # soundfile.LibsndfileError / RuntimeError for unknown formats
        raise VoiceError(
            f"Could not read {p.name}: it is not a supported audio file (WAV, FLAC, OGG, MP3). {exc}"
        ) from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise VoiceError(f"The clip {p.name} contains no audio.")
    return info


class VoiceLibrary:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def list(self) -> list[Voice]:
        voices: list[Voice] = []
        if not self.folder.is_dir():
            return voices
        for meta in self.folder.glob("*/voice.json"):
            try:
                data = read_json(meta)
                voices.append(
                    Voice(
                        id=meta.parent.name,
                        name=str(data["name"]),
                        clip=meta.parent / "reference.wav",
                        created=float(data.get("created", 0)),
                        source=str(data.get("source", "")),
                    )
                )
            except (JsonFileError, KeyError, TypeError, ValueError) as exc:
                log.warning("skipping voice %s: %s", meta.parent, exc)
        return sorted(voices, key=lambda v: (v.name.lower(), v.created))

    def get(self, voice_id: str) -> Voice:
        for voice in self.list():
            if voice.id == voice_id:
                return voice
        raise VoiceError(f"No voice with id {voice_id} in the library.")

    def find_by_name(self, name: str) -> Voice | None:
        return next((v for v in self.list() if v.name == name), None)

    def _new_folder(self) -> tuple[str, Path]:
        voice_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = self.folder / voice_id
        folder.mkdir(parents=True)
        return voice_id, folder

    def add_file(self, name: str, clip: str | Path) -> Voice:
        """Copy a clip into the library (converted to WAV when it is another format)."""
        check_clip(clip)
        voice_id, folder = self._new_folder()
        target = folder / "reference.wav"
        try:
            if Path(clip).suffix.lower() == ".wav":
                shutil.copyfile(clip, target)
            else:
                data, rate = sf.read(str(clip), always_2d=False)
                sf.write(str(target), data, rate, subtype="PCM_16")
            self._write_meta(folder, name, source=str(clip))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.get(voice_id)

    def add_audio(self, name: str, audio: np.ndarray, sample_rate: int, source: str = "recording") -> Voice:
        voice_id, folder = self._new_folder()
        try:
            sf.write(str(folder / "reference.wav"), audio, sample_rate, subtype="PCM_16")
            self._write_meta(folder, name, source=source)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.get(voice_id)

    def _write_meta(self, folder: Path, name: str, source: str, created: float | None = None) -> None:
        name = name.strip()
        if not name:
            raise VoiceError("A voice needs a name.")
        write_json(folder / "voice.json", {"name": name, "created": created or time.time(), "source": source})

    def rename(self, voice_id: str, new_name: str) -> Voice:
        voice = self.get(voice_id)
        self._write_meta(voice.folder, new_name, source=voice.source, created=voice.created)
        return self.get(voice_id)

    def delete(self, voice_id: str) -> None:
        voice = self.get(voice_id)
        shutil.rmtree(voice.folder)
        log.info("voice %r deleted", voice.name)
