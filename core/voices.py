"""Voices by name, for front ends that must never take a file path (the local API).

The voice library is ``<data>/voices/<id>/`` with ``voice.json`` (``name``, ``created``, ``source``) and
``reference.wav``; :func:`read_library` reads that format (the desktop writes it). A :class:`VoiceCatalog`
joins the library with folders of plain audio files (each file is a voice named by its stem) and resolves a
name to its clip; anything that is not one of those names is unknown, whatever it looks like.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .api import EngineError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
Origin = Literal["library", "folder"]


class VoiceNotFound(EngineError):
    """No voice of that name in the library or the voice folders."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"No voice named {name!r}: use a voice-library name (GET /v1/audio/voices lists them).")


@dataclass(frozen=True)
class LibraryVoice:
    id: str
    name: str
    clip: Path
    created: float
    source: str = ""


def read_library(folder: Path) -> list[LibraryVoice]:
    """The library's voices sorted by name then age; unreadable entries are skipped (and logged)."""
    voices: list[LibraryVoice] = []
    if not folder.is_dir():
        return voices
    for meta in folder.glob("*/voice.json"):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            clip = meta.parent / "reference.wav"
            if not clip.is_file():
                raise ValueError("reference.wav is missing")
            voices.append(LibraryVoice(meta.parent.name, str(data["name"]), clip, float(data.get("created", 0)),
                                       str(data.get("source", ""))))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("skipping voice %s: %s", meta.parent, exc)
    return sorted(voices, key=lambda v: (v.name.lower(), v.created))


@dataclass(frozen=True)
class VoiceEntry:
    name: str
    clip: Path
    origin: Origin

    def duration(self) -> float | None:
        """The clip's length in seconds (None when its header cannot be read)."""
        import soundfile as sf

        try:
            return float(sf.info(str(self.clip)).duration)
        except Exception as exc:  # noqa: BLE001 - soundfile raises several kinds for unreadable files
            log.warning("cannot read voice clip %s: %s", self.clip, exc)
            return None


class VoiceCatalog:
    """Library voices first, then each folder's audio files by stem; the first voice of a name wins."""

    def __init__(self, library: Path | None, folders: Sequence[Path] = ()) -> None:
        self.library = library
        self.folders = [Path(f) for f in folders]

    def entries(self) -> list[VoiceEntry]:
        found: dict[str, VoiceEntry] = {}
        candidates = [VoiceEntry(v.name, v.clip, "library") for v in read_library(self.library)] if self.library \
            else []
        for folder in self.folders:
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES) \
                if folder.is_dir() else []
            candidates += [VoiceEntry(p.stem, p, "folder") for p in files]
        for entry in candidates:
            if entry.name in found:
                log.info("voice name %r appears twice; using %s", entry.name, found[entry.name].clip)
                continue
            found[entry.name] = entry
        return list(found.values())

    def resolve(self, name: str) -> Path:
        """The clip of the voice called ``name``; :class:`VoiceNotFound` for any other string."""
        for entry in self.entries():
            if entry.name == name:
                return entry.clip
        raise VoiceNotFound(name)
