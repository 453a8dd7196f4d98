"""The Record dialog: device choice, countdown, live level meter, stop, trim, quality warnings, save as voice."""

from __future__ import annotations

import logging
import time
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

import numpy as np

from desktop.audio import AudioUnavailable, list_devices
from desktop.dialogs import describe_error
from desktop.player import Player
from desktop.recorder import LIMIT_SECONDS, Recorder, Take, finish_take
from desktop.voice_library import Voice, VoiceLibrary
from desktop.widgets.waveform import LevelMeter, Waveform

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "System default"


class RecordDialog(tk.Toplevel):
    def __init__(
        self,
        parent: tk.Misc,
        library: VoiceLibrary,
        dialog: Callable[..., object],
        on_saved: Callable[[Voice], None],
        input_device: str = "",
        output_device: str = "",
        countdown: int = 3,
    ) -> None:
        super().__init__(parent)
        self.title("Record a voice")
        self.minsize(520, 380)
        self.transient(parent.winfo_toplevel())
        self.library = library
        self.dialog = dialog
        self.on_saved = on_saved
        self.output_device = output_device
        self.countdown_seconds = max(0, int(countdown))
        self.recorder: Recorder | None = None
        self.take: Take | None = None
        self.player: Player | None = None
        self._tick_id: str | None = None
        self.phase = tk.StringVar(self, value="idle")  # idle | countdown | recording | done | error
        self.status = tk.StringVar(self, value="Read a few sentences in your normal voice, 5 to 15 seconds.")
        self.warnings = tk.StringVar(self, value="")
        self.name = tk.StringVar(self, value=time.strftime("My voice %Y-%m-%d %H%M"))
        self.device = tk.StringVar(self, value=input_device or DEFAULT_DEVICE)

        body = ttk.Frame(self, padding=12)
        body.pack(fill="both", expand=True)
        row = ttk.Frame(body)
        row.pack(fill="x")
        ttk.Label(row, text="Microphone:").pack(side="left")
        self.device_box = ttk.Combobox(row, textvariable=self.device, state="readonly", width=40)
        self.device_box.pack(side="left", fill="x", expand=True, padx=6)
        ttk.Label(body, textvariable=self.status, wraplength=480, justify="left").pack(fill="x", pady=(10, 4))
        self.meter = LevelMeter(body)
        self.meter.pack(fill="x")
        self.level = 0.0
        self.wave = Waveform(body, height=90)
        self.wave.pack(fill="x", pady=8)
        ttk.Label(body, textvariable=self.warnings, style="Warning.TLabel", wraplength=480, justify="left").pack(
            fill="x"
        )
        buttons = ttk.Frame(body)
        buttons.pack(fill="x", pady=(8, 0))
        self.record_button = ttk.Button(buttons, text="\u25cf Record", command=self.start)
        self.record_button.pack(side="left")
        self.stop_button = ttk.Button(buttons, text="\u25a0 Stop", command=self.stop, state="disabled")
        self.stop_button.pack(side="left", padx=6)
        self.play_button = ttk.Button(buttons, text="\u25b6 Play", command=self.play, state="disabled")
        self.play_button.pack(side="left")
        save = ttk.Frame(body)
        save.pack(fill="x", pady=(10, 0))
        ttk.Label(save, text="Name:").pack(side="left")
        ttk.Entry(save, textvariable=self.name).pack(side="left", fill="x", expand=True, padx=6)
        self.save_button = ttk.Button(save, text="Save as voice", command=self.save, state="disabled")
        self.save_button.pack(side="left")
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind("<Escape>", lambda e: self.close())
        self.refresh_devices()

    # --- devices -----------------------------------------------------------------------------------------
    def refresh_devices(self) -> None:
        try:
            names = [d.name for d in list_devices() if d.inputs > 0]
        except AudioUnavailable as exc:
            self._fail(str(exc))
            return
        if not names:
            self._fail("No microphone found. Connect one (or enable it in the system sound settings), then try again.")
            return
        self.device_box.configure(values=[DEFAULT_DEVICE, *names])
        if self.device.get() not in (DEFAULT_DEVICE, *names):
            self.device.set(DEFAULT_DEVICE)

    def _fail(self, message: str) -> None:
        self.phase.set("error")
        self.status.set(message)
        self.record_button.configure(state="normal")
        self.stop_button.configure(state="disabled")
        self.dialog("error", parent=self, title="Microphone", message=message)

    # --- recording ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.phase.get() in ("countdown", "recording"):
            return
        self._stop_playback()
        self.take = None
        self.warnings.set("")
        self.save_button.configure(state="disabled")
        self.play_button.configure(state="disabled")
        self.record_button.configure(state="disabled")
        self.stop_button.configure(state="normal")
        self._countdown(self.countdown_seconds)

    def _countdown(self, left: int) -> None:
        if left > 0:
            self.phase.set("countdown")
            self.status.set(f"Recording starts in {left}\u2026")
            self._tick_id = self.after(1000, self._countdown, left - 1)
            return
        device = "" if self.device.get() == DEFAULT_DEVICE else self.device.get()
        self.recorder = Recorder(device)
        try:
            used = self.recorder.start()
        except AudioUnavailable as exc:
            self.recorder = None
            self._fail(str(exc))
            return
        self.phase.set("recording")
        self.status.set(f"Recording from {used.name} at {used.samplerate:.0f} Hz\u2026 press Stop when done.")
        self._tick()

    def _tick(self) -> None:
        if self.recorder is None or not self.recorder.recording:
            return
        self.set_level(self.recorder.level)
        self.status.set(f"Recording\u2026 {self.recorder.seconds:.1f} s")
        if self.recorder.seconds >= LIMIT_SECONDS:
            self.stop()
            return
        self._tick_id = self.after(50, self._tick)

    def set_level(self, level: float) -> None:
        self.level = level
        self.meter.set_level(level)

    def stop(self) -> None:
        if self._tick_id is not None:
            self.after_cancel(self._tick_id)
            self._tick_id = None
        self.record_button.configure(state="normal")
        self.stop_button.configure(state="disabled")
        if self.recorder is None:
            self.phase.set("idle")
            self.status.set("Recording cancelled.")
            return
        audio, rate = self.recorder.stop()
        self.recorder = None
        self.set_level(0.0)
        self.show_take(finish_take(audio, rate))

    def show_take(self, take: Take) -> None:
        """Show a finished (trimmed, resampled) take with its warnings, ready to play or save."""
        self.take = take
        self.wave.set_audio(self.take.audio, self.take.sample_rate)
        self.phase.set("done")
        if self.take.audio.size == 0:
            self.status.set("Nothing but silence was recorded. Check the microphone and try again.")
            self.warnings.set("\n".join(self.take.warnings))
            return
        self.status.set(f"Recorded {self.take.seconds:.1f} s (silence trimmed). Listen, then save it as a voice.")
        self.warnings.set("\n".join("\u26a0 " + w for w in self.take.warnings))
        self.save_button.configure(state="normal")
        self.play_button.configure(state="normal")

    # --- after recording ---------------------------------------------------------------------------------
    def play(self) -> None:
        if self.take is None:
            return
        try:
            self.player = self.player or Player(self.output_device)
            self.player.load((np.clip(self.take.audio, -1, 1) * 32767).astype(np.int16), self.take.sample_rate)
            self.player.play()
        except AudioUnavailable as exc:
            self.dialog("error", parent=self, title="Playback", message=str(exc))

    def _stop_playback(self) -> None:
        if self.player is not None:
            self.player.stop()

    def save(self) -> Voice | None:
        if self.take is None or self.take.audio.size == 0:
            return None
        name = self.name.get().strip()
        if not name:
            self.dialog("error", parent=self, title="Save voice", message="Give the voice a name first.")
            return None
        try:
            voice = self.library.add_audio(name, self.take.audio, self.take.sample_rate)
        except Exception as exc:
            message, details = describe_error(exc)
            self.dialog(
                "error",
                parent=self,
                title="Save voice",
                message=f"Could not save the voice: {message}",
                details=details,
            )
            return None
        self.on_saved(voice)
        self.close()
        return voice

    def close(self) -> None:
        if self._tick_id is not None:
            self.after_cancel(self._tick_id)
            self._tick_id = None
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        self._stop_playback()
        self.phase.set("idle")
        self.destroy()
