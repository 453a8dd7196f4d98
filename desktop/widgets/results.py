"""The result panel: the waveform of the current result, playback with a cursor, playback while generating (the
engine's chunks as they arrive, optionally streamed inside segments), saving as
WAV, FLAC, MP3 or Opus (:mod:`core.audio_formats`, the last choice remembered), and the history of this session's
results.

:class:`ResultPanel` owns its state (the history, the current entry, the player); what it needs from the window
comes in through its constructor.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

import numpy as np
import soundfile as sf

from core.api import SAMPLE_RATE, AudioChunk, EngineError
from core.audio_formats import FILE_FORMATS, FORMATS, AudioWriter, format_for
from desktop.audio import AudioUnavailable
from desktop.dialogs import DialogFn
from desktop.errors import ReportError, UserError
from desktop.history import HistoryEntry
from desktop.player import Player
from desktop.settings import slugify
from desktop.widgets.panels import HistoryPanel
from desktop.widgets.waveform import Waveform

log = logging.getLogger(__name__)

PLAY, PAUSE = "\u25b6 Play", "\u23f8 Pause"
NO_RESULT = "There is no result to save yet. Generate something first."


def default_audio_name(text: str, when: float | None = None, fmt: str = "wav") -> str:
    words = re.findall(r"\w+", text, flags=re.UNICODE)[:6]
    stem = slugify("-".join(words), fallback="speech")[:40]
    return f"{stem}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}.{fmt}"


def save_filetypes(first: str) -> list[tuple[str, str]]:
    """The Save dialog's file types, ``first`` (the remembered format) first."""
    names = [first, *(n for n in FILE_FORMATS if n != first)] if first in FILE_FORMATS else list(FILE_FORMATS)
    return [(FORMATS[n].label, f"*.{n}") for n in names]


def write_audio_atomic(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write ``audio`` in the format of ``path``'s extension (the shared encoder of :mod:`core.audio_formats`)
    via a temp file in the same folder and ``os.replace``.

    Unlike :func:`core.audio_formats.write_audio` it creates the folder, replaces a file the user agreed to
    overwrite in the Save dialog and lets the ``OSError`` through, so the window can say what happened in its own
    words (full disk, no permission) naming the file the user chose.
    """
    fmt = format_for(path)  # EngineError for an extension no encoder has
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        try:
            with AudioWriter(tmp, fmt, sample_rate) as out:
                out.write(audio)
        except RuntimeError as exc:  # libsndfile's own errors (its encoders report no errno)
            if isinstance(exc, EngineError):
                raise
            raise UserError(f"The {fmt.label} encoder failed: {exc}.") from exc
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultPanel(ttk.Frame):
    """The "Result" box (waveform, transport, streaming switch, Save) above the "History" list.

    Collaborators: ``dialog`` (file dialogs), ``report_error`` (the window's error path), ``on_status`` (a line
    for the status bar), ``output_dir``/``output_device`` (read from the settings when used), ``on_regenerate``
    and ``on_preset`` (the History buttons, handed the entry), ``on_save`` (the Save button; default: the save
    dialog), ``on_stream_change`` (handed :attr:`streams_inside` whenever either streaming switch changes).
    """

    def __init__(
        self,
        parent: tk.Misc,
        *,
        dialog: DialogFn,
        report_error: ReportError,
        on_status: Callable[[str], None],
        output_dir: Callable[[], Path],
        output_device: Callable[[], str],
        on_regenerate: Callable[[HistoryEntry], object],
        on_preset: Callable[[HistoryEntry], object],
        on_save: Callable[[], object] | None = None,
        streaming: bool = False,
        save_format: str = "wav",
        on_format: Callable[[str], None] | None = None,
        stream_inside: bool = False,
        on_stream_change: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self._dialog = dialog
        self._report_error = report_error
        self._on_status = on_status
        self._output_dir = output_dir
        self._output_device = output_device
        self.save_format = save_format if save_format in FILE_FORMATS else "wav"  # the last format saved
        self._on_format = on_format or (lambda name: None)
        self.history: list[HistoryEntry] = []
        self.current: HistoryEntry | None = None
        self.player: Player | None = None
        self._player_entry: HistoryEntry | None = None  # what the player holds (None: a reference clip)
        self._cursor_id: str | None = None
        self._streaming = False  # a streaming synthesis is running
        self._stream_started = False

        box = ttk.LabelFrame(self, text="Result", padding=6)
        box.pack(fill="x")
        self.waveform = Waveform(box, height=96, on_seek=self.seek)
        self.waveform.pack(fill="x")
        transport = ttk.Frame(box)
        transport.pack(fill="x", pady=(4, 0))
        self.play_button = ttk.Button(transport, text=PLAY, command=self.play_pause)
        self.play_button.pack(side="left")
        ttk.Button(transport, text="\u25a0 Stop", command=self.stop).pack(side="left", padx=4)
        self.position = tk.StringVar(self, value="0.0 / 0.0 s")
        ttk.Label(transport, textvariable=self.position).pack(side="left", padx=8)
        self.stream = tk.BooleanVar(self, value=streaming)
        ttk.Checkbutton(transport, text="Play while generating", variable=self.stream).pack(
            side="left", padx=8
        )
        # settings.stream: the first sound after the first chunk of a segment, not the whole segment (one beam)
        self.stream_inside = tk.BooleanVar(self, value=stream_inside)
        self.stream_inside_button = ttk.Checkbutton(
            box, text="Stream inside segments (first sound sooner, one beam)", variable=self.stream_inside
        )
        self.stream_inside_button.pack(anchor="w", pady=(2, 0))
        self._on_stream_change = on_stream_change or (lambda on: None)
        for var in (self.stream, self.stream_inside):
            var.trace_add("write", lambda *a: self._stream_changed())
        self.save_button = ttk.Button(transport, text="Save as\u2026", command=on_save or self.save_dialog)
        self.save_button.pack(side="right")
        self.history_panel = HistoryPanel(
            self,
            on_select=self.show,
            on_regenerate=lambda i: on_regenerate(self.history[i]),
            on_preset=lambda i: on_preset(self.history[i]),
        )
        self.history_panel.pack(fill="both", expand=True, pady=(8, 0))
        self._enable_inside()

    # --- entries ----------------------------------------------------------------------------------------------
    def add(self, entry: HistoryEntry) -> None:
        """A new result: listed first in History and shown."""
        self.history.append(entry)
        request = entry.request
        self.history_panel.add(
            len(self.history) - 1,
            time.strftime("%H:%M:%S", time.localtime(entry.created)),
            request.text,
            request.voice_label,
            entry.result.duration,
            request.settings.seed,
        )
        self._show_entry(entry)

    def show(self, index: int) -> None:
        """Show the History entry ``index`` (stops what is playing if it is another one)."""
        if 0 <= index < len(self.history) and self.history[index] is not self.current:
            self.stop()
            self._show_entry(self.history[index])

    def _show_entry(self, entry: HistoryEntry) -> None:
        self.current = entry
        self.waveform.set_audio(entry.result.audio, entry.result.sample_rate)
        self.position.set(f"0.0 / {entry.result.duration:.1f} s")

    # --- playback ---------------------------------------------------------------------------------------------
    def _player(self) -> Player:
        if self.player is None:
            self.player = Player(self._output_device())
        return self.player

    def reset_player(self) -> None:
        """Stop and drop the player (the output device changed; the next playback opens the new one)."""
        if self.player is not None:
            self.player.stop()
        self.player = None
        self._player_entry = None

    def play_pause(self) -> None:
        if self.current is None:
            return
        try:
            player = self._player()
            if player.playing:
                player.pause()
                self.play_button.configure(text=PLAY)
                return
            if self._player_entry is not self.current:
                player.load(self.current.result.audio, self.current.result.sample_rate)
                self._player_entry = self.current
            player.play()
        except AudioUnavailable as exc:
            self._report_error("Playback", exc)
            return
        self.play_button.configure(text=PAUSE)
        self._poll_cursor()

    def play_clip(self, path: Path) -> None:
        """Play an audio file (a voice's reference clip) through the same player."""
        try:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
            player = self._player()
            player.load(audio.mean(axis=1), rate)
            self._player_entry = None
            player.play()
        except AudioUnavailable as exc:
            self._report_error("Playback", exc)
        except (OSError, RuntimeError) as exc:
            self._report_error("Playback", exc, prefix=f"Could not play {path.name}: ")

    def stop(self) -> None:
        if self.player is not None:
            self.player.stop()
        self.play_button.configure(text=PLAY)
        self.waveform.set_cursor(0.0)

    def seek(self, seconds: float) -> None:
        if self.player is not None and self._player_entry is self.current:
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
            if player.playing or self._streaming:
                self._cursor_id = self.after(50, tick)
            else:
                self.play_button.configure(text=PLAY)

        self._cursor_id = self.after(50, tick)

    # --- streaming playback -----------------------------------------------------------------------------------
    @property
    def streams_inside(self) -> bool:
        """Both switches on: the request sets ``settings.stream`` (streaming is only worth one beam when it plays)."""
        return bool(self.stream.get()) and bool(self.stream_inside.get())

    def _enable_inside(self) -> None:
        self.stream_inside_button.state(["!disabled"] if self.stream.get() else ["disabled"])

    def _stream_changed(self) -> None:
        self._enable_inside()
        self._on_stream_change(self.streams_inside)

    def begin_stream(self) -> None:
        """A synthesis starts; if it plays while generating, the engine's chunks come through :meth:`play_chunk`."""
        self.stop()
        self._streaming = bool(self.stream.get())
        self._stream_started = False

    def play_chunk(self, chunk: AudioChunk) -> None:
        """The next piece of the result (silences included): the first one starts playback, the others follow."""
        if not self._streaming:
            return
        try:
            player = self._player()
            if not self._stream_started:
                player.load(chunk.audio, SAMPLE_RATE, open_ended=True)
                self._player_entry = None
                player.play()
                self._stream_started = True
                self._poll_cursor()
            else:
                player.append(chunk.audio, SAMPLE_RATE, last=chunk.last and chunk.segment + 1 >= chunk.segments)
        except AudioUnavailable as exc:
            self._streaming = False
            self.stream.set(False)
            self._on_status(str(exc))
            log.warning("streaming playback disabled: %s", exc)

    def end_stream(self, completed: bool) -> None:
        """The synthesis ended: the streamed audio plays out (``completed``) or stops (failed, cancelled)."""
        self._streaming = False
        player = self.player
        if self._stream_started and player is not None:
            if completed:
                player.close_stream_input()
                if self.current is not None and np.array_equal(player.source, self.current.result.audio):
                    self._player_entry = self.current  # it holds the result: Play, Pause and seek go on with it
            else:
                player.stop()
        self._stream_started = False

    # --- saving -----------------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path | None:
        """Save the current result to ``path`` (WAV, FLAC, MP3 or Opus by its extension)."""
        if self.current is None:
            self._report_error("Save", NO_RESULT)
            return None
        try:
            write_audio_atomic(path, self.current.result.audio, self.current.result.sample_rate)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.filename and Path(exc.filename).name.startswith(f".{path.stem}."):
                exc.filename = str(path)  # name the file the user chose, not our temp file
            self._report_error("Save", exc, prefix=f"Could not save {path.name}. ")
            return None
        self._on_status(f"Saved {path}")
        fmt = path.suffix.lower().lstrip(".")
        if fmt != self.save_format:
            self.save_format = fmt
            self._on_format(fmt)
        return path

    save_wav = save  # the name the GUI/CLI parity tests use

    def save_dialog(self) -> Path | None:
        """Ask where and as what (WAV, FLAC, MP3, Opus: the last format chosen first) and save there."""
        if self.current is None:
            self._report_error("Save", NO_RESULT)
            return None
        chosen = self._dialog(
            "save_file",
            parent=self.winfo_toplevel(),
            title="Save the result",
            initialdir=str(self._output_dir()),
            initialfile=default_audio_name(self.current.request.text, self.current.created, self.save_format),
            defaultextension=f".{self.save_format}",
            filetypes=save_filetypes(self.save_format),
        )
        if not chosen:
            return None
        path = Path(chosen)
        if not path.suffix:
            path = path.with_suffix(f".{self.save_format}")
        return self.save(path)

    save_wav_dialog = save_dialog

    def quick_save(self) -> Path | None:
        """Save into the output folder under the default name; never overwrites (adds ~2, ~3, ...)."""
        if self.current is None:
            self._report_error("Save", NO_RESULT)
            return None
        fmt = self.save_format
        path = self._output_dir() / default_audio_name(self.current.request.text, self.current.created, fmt)
        n = 2
        while path.exists():
            path = path.with_name(f"{path.stem.rsplit('~', 1)[0]}~{n}.{fmt}")
            n += 1
        return self.save(path)
