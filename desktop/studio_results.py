"""The result side of the main window: history entries, playback with a cursor, saving WAV files.

:class:`ResultActions` is mixed into :class:`desktop.app.StudioApp`; it uses the window's widgets
(``waveform``, ``play_button``, ``position``) and ``dialog``/``error``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from core.api import Emotion, GenerationSettings, SynthesisRequest, SynthesisResult
from desktop.audio import AudioUnavailable
from desktop.player import Player
from desktop.presets import slugify

if TYPE_CHECKING:
    import tkinter as tk
    from tkinter import ttk

    from desktop.dirs import AppDirs
    from desktop.presets import AppSettings
    from desktop.widgets.waveform import Waveform
    from desktop.worker import Job


@dataclass(frozen=True)
class Request:
    """Everything needed to regenerate a result exactly: the engine's request plus what only the GUI needs."""

    synthesis: SynthesisRequest
    voice_label: str = ""
    emotion_state: dict = field(default_factory=dict)
    stream: bool = False

    @property
    def text(self) -> str:
        return self.synthesis.text

    @property
    def voice(self) -> str:
        return str(self.synthesis.voice)

    @property
    def emotion(self) -> Emotion:
        return self.synthesis.emotion

    @property
    def settings(self) -> GenerationSettings:
        return self.synthesis.settings


@dataclass
class HistoryEntry:
    request: Request
    result: SynthesisResult
    created: float = field(default_factory=time.time)


def default_wav_name(text: str, when: float | None = None) -> str:
    words = re.findall(r"\w+", text, flags=re.UNICODE)[:6]
    stem = slugify("-".join(words), fallback="speech")[:40]
    return f"{stem}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}.wav"


def write_wav_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit WAV via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, audio, sample_rate, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultActions:
    """Playback and saving of the current result (mixed into StudioApp)."""

    # What the mixin uses of StudioApp (declared for the type checker; set in StudioApp.__init__).
    root: tk.Tk
    dirs: AppDirs
    settings: AppSettings
    waveform: Waveform
    position: tk.StringVar
    status: tk.StringVar
    play_button: ttk.Button
    history: list[HistoryEntry]
    current: HistoryEntry | None
    player: Player | None
    job: Job | None
    _cursor_id: str | None
    dialog: Callable[..., Any]
    error: Callable[..., None]

    # --- result, playback -------------------------------------------------------------------------------------
    def show_entry(self, entry: HistoryEntry) -> None:
        self.current = entry
        self.waveform.set_audio(entry.result.audio, entry.result.sample_rate)
        self.position.set(f"0.0 / {entry.result.duration:.1f} s")

    def show_history(self, index: int) -> None:
        if 0 <= index < len(self.history) and self.history[index] is not self.current:
            self.stop_playback()
            self.show_entry(self.history[index])

    def _player(self) -> Player:
        if self.player is None:
            self.player = Player(self.settings.output_device)
        return self.player

    def play_pause(self) -> None:
        if self.current is None:
            return
        try:
            player = self._player()
            if player.playing:
                player.pause()
                self.play_button.configure(text="\u25b6 Play")
                return
            if getattr(player, "entry", None) is not self.current:
                player.load(self.current.result.audio, self.current.result.sample_rate)
                player.entry = self.current  # type: ignore[attr-defined]
            player.play()
        except AudioUnavailable as exc:
            self.error("Playback", exc)
            return
        self.play_button.configure(text="\u23f8 Pause")
        self._poll_cursor()

    def play_reference(self, path: Path) -> None:
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
            player = self._player()
            player.load(audio.mean(axis=1), rate)
            player.entry = None  # type: ignore[attr-defined]
            player.play()
        except AudioUnavailable as exc:
            self.error("Playback", exc)
        except (OSError, RuntimeError) as exc:
            self.error("Playback", exc, prefix=f"Could not play {path.name}: ")

    def stop_playback(self) -> None:
        if self.player is not None:
            self.player.stop()
        self.play_button.configure(text="\u25b6 Play")
        self.waveform.set_cursor(0.0)

    def seek(self, seconds: float) -> None:
        if self.player is not None and getattr(self.player, "entry", None) is self.current:
            self.player.seek(seconds)
        self.waveform.set_cursor(seconds)

    def _poll_cursor(self) -> None:
        if self._cursor_id is not None:
            return

        def tick() -> None:
            self._cursor_id = None
            player = self.player
            if player is None:
                return
            self.waveform.set_cursor(player.position)
            total = self.current.result.duration if self.current else player.duration
            self.position.set(f"{player.position:.1f} / {total:.1f} s")
            if player.playing or self.job is not None:
                self._cursor_id = self.root.after(50, tick)
            else:
                self.play_button.configure(text="\u25b6 Play")

        self._cursor_id = self.root.after(50, tick)

    # --- saving -----------------------------------------------------------------------------------------------
    def output_dir(self) -> Path:
        return Path(self.settings.output_dir) if self.settings.output_dir else self.dirs.outputs

    def save_wav(self, path: Path) -> Path | None:
        if self.current is None:
            self.error("Save", "There is no result to save yet. Generate something first.")
            return None
        try:
            write_wav_atomic(path, self.current.result.audio, self.current.result.sample_rate)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.filename and Path(exc.filename).name.startswith(f".{path.stem}."):
                exc.filename = str(path)  # name the file the user chose, not our temp file
            self.error("Save", exc, prefix=f"Could not save {path.name}. ")
            return None
        self.status.set(f"Saved {path}")
        return path

    def save_wav_dialog(self) -> Path | None:
        if self.current is None:
            self.error("Save", "There is no result to save yet. Generate something first.")
            return None
        folder = self.output_dir()
        name = default_wav_name(self.current.request.text, self.current.created)
        chosen = self.dialog(
            "save_file",
            parent=self.root,
            title="Save as WAV",
            initialdir=str(folder),
            initialfile=name,
            defaultextension=".wav",
            filetypes=[("WAV audio", "*.wav")],
        )
        return self.save_wav(Path(chosen)) if chosen else None

    def quick_save(self) -> Path | None:
        """Save into the output folder under the default name; never overwrites (adds -2, -3, ...)."""
        if self.current is None:
            self.error("Save", "There is no result to save yet. Generate something first.")
            return None
        folder = self.output_dir()
        path = folder / default_wav_name(self.current.request.text, self.current.created)
        n = 2
        while path.exists():
            path = path.with_name(f"{path.stem.rsplit('~', 1)[0]}~{n}.wav")
            n += 1
        return self.save_wav(path)
