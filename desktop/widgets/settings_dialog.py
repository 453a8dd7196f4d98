"""The Settings dialog: model folder, device, fp16, output folder, audio devices, recording, streaming, theme."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from tkinter import ttk

from core.device import DEVICES
from desktop.audio import AudioUnavailable, list_devices
from desktop.settings import AppSettings
from desktop.theme import THEME_LABELS, THEME_MODES

DEFAULT = "System default"


class SettingsDialog(tk.Toplevel):
    def __init__(
        self,
        parent: tk.Misc,
        settings: AppSettings,
        dialog: Callable[..., object],
        on_apply: Callable[[AppSettings], None],
    ) -> None:
        super().__init__(parent)
        self.title("Settings")
        self.transient(parent.winfo_toplevel())
        self.dialog = dialog
        self.on_apply = on_apply
        self.original = settings
        self.vars = {
            "model_dir": tk.StringVar(self, value=settings.model_dir),
            "device": tk.StringVar(self, value=settings.device),
            "fp16": tk.BooleanVar(self, value=settings.fp16),
            "output_dir": tk.StringVar(self, value=settings.output_dir),
            "input_device": tk.StringVar(self, value=settings.input_device or DEFAULT),
            "output_device": tk.StringVar(self, value=settings.output_device or DEFAULT),
            "countdown": tk.IntVar(self, value=settings.countdown),
            "streaming": tk.BooleanVar(self, value=settings.streaming),
            "stream_inside": tk.BooleanVar(self, value=settings.stream_inside),
            "theme": tk.StringVar(self, value=THEME_LABELS.get(settings.theme, THEME_LABELS["system"])),
        }
        body = ttk.Frame(self, padding=12)
        body.pack(fill="both", expand=True)
        body.columnconfigure(1, weight=1)
        r = 0
        for key, label in (("model_dir", "Model folder"), ("output_dir", "Output folder")):
            ttk.Label(body, text=label).grid(row=r, column=0, sticky="w", pady=3)
            ttk.Entry(body, textvariable=self.vars[key], width=50).grid(row=r, column=1, sticky="ew", padx=6)
            ttk.Button(body, text="Browse\u2026", command=partial(self._browse, key)).grid(row=r, column=2)
            r += 1
        ttk.Label(body, text="Device").grid(row=r, column=0, sticky="w", pady=3)
        ttk.Combobox(
            body, textvariable=self.vars["device"], values=DEVICES, state="readonly", width=10
        ).grid(row=r, column=1, sticky="w", padx=6)
        r += 1
        ttk.Checkbutton(
            body, text="Half precision (fp16) on CUDA: faster, less memory", variable=self.vars["fp16"]
        ).grid(row=r, column=1, sticky="w", padx=6)
        r += 1
        try:
            devices = list_devices()
            inputs = [DEFAULT, *[d.name for d in devices if d.inputs > 0]]
            outputs = [DEFAULT, *[d.name for d in devices if d.outputs > 0]]
            self.audio_note = ""
        except AudioUnavailable as exc:
            inputs = outputs = [DEFAULT]
            self.audio_note = f"No audio devices: {exc}"
        for key, label, values in (("input_device", "Microphone", inputs), ("output_device", "Speakers", outputs)):
            ttk.Label(body, text=label).grid(row=r, column=0, sticky="w", pady=3)
            ttk.Combobox(body, textvariable=self.vars[key], values=values, state="readonly", width=40).grid(
                row=r, column=1, sticky="ew", padx=6
            )
            r += 1
        if self.audio_note:
            ttk.Label(body, text=self.audio_note, style="Warning.TLabel", wraplength=460).grid(
                row=r, column=0, columnspan=3, sticky="w"
            )
            r += 1
        ttk.Label(body, text="Countdown before recording (s)").grid(row=r, column=0, sticky="w", pady=3)
        ttk.Spinbox(body, from_=0, to=10, textvariable=self.vars["countdown"], width=5).grid(
            row=r, column=1, sticky="w", padx=6
        )
        r += 1
        ttk.Checkbutton(
            body, text="Play while generating (from the first audio ready)", variable=self.vars["streaming"]
        ).grid(row=r, column=1, sticky="w", padx=6)
        r += 1
        ttk.Checkbutton(
            body, text="Stream inside segments (first sound sooner, one beam)", variable=self.vars["stream_inside"]
        ).grid(row=r, column=1, sticky="w", padx=6)
        r += 1
        ttk.Label(body, text="Appearance").grid(row=r, column=0, sticky="w", pady=3)
        ttk.Combobox(
            body, textvariable=self.vars["theme"], values=[THEME_LABELS[m] for m in THEME_MODES], state="readonly",
            width=18,
        ).grid(row=r, column=1, sticky="w", padx=6)
        r += 1
        buttons = ttk.Frame(body)
        buttons.grid(row=r, column=0, columnspan=3, sticky="e", pady=(12, 0))
        ttk.Button(buttons, text="Cancel", command=self.destroy).pack(side="right")
        ttk.Button(buttons, text="Apply", command=self.apply).pack(side="right", padx=6)
        self.bind("<Escape>", lambda e: self.destroy())

    def _browse(self, key: str) -> None:
        path = self.dialog("directory", parent=self, title="Choose a folder", initialdir=self.vars[key].get() or None)
        if path:
            self.vars[key].set(path)

    def values(self) -> AppSettings:
        v = {k: var.get() for k, var in self.vars.items() if k != "countdown"}
        v["theme"] = next((m for m in THEME_MODES if THEME_LABELS[m] == v["theme"]), "system")
        for key in ("input_device", "output_device"):
            if v[key] == DEFAULT:
                v[key] = ""
        try:
            v["countdown"] = max(0, int(self.vars["countdown"].get()))
        except (tk.TclError, ValueError):
            v["countdown"] = self.original.countdown
        return replace(self.original, **v)

    def apply(self) -> None:
        self.on_apply(self.values())
        self.destroy()
