"""The studio's model row: which IndexTTS (2.0 / 2.5, from the model folders present), IndexTTS-2.5's language
(default: from the text's script) and duration factor (2.5 only; hidden for 2.0), and the A/B button that renders
the same text and voice with both models."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from core.api import SETTING_RANGES
from core.text.v25 import SUPPORTED_LANGUAGES, default_segment_tokens, guess_language

AUTO = "auto"
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "es": "Spanish", "ar": "Arabic"}
DURATION = SETTING_RANGES["duration_factor"]


def language_label(code: str) -> str:
    return f"{LANGUAGE_NAMES.get(code, code)} ({code})"


class ModelBar(ttk.LabelFrame):
    """``on_model(version)`` when the user picks another model; ``on_change()`` when the language or duration
    changes (the preview follows); ``on_ab()`` for the A/B button."""

    def __init__(self, parent: tk.Misc, on_model: Callable[[str], object], on_change: Callable[[], object],
                 on_ab: Callable[[], object]) -> None:
        super().__init__(parent, text="Model", padding=8)
        self._on_model, self._on_change = on_model, on_change
        self.version = tk.StringVar(self, value="2.0")
        self.picker = ttk.Combobox(self, textvariable=self.version, values=["2.0"], state="readonly", width=14)
        self.picker.grid(row=0, column=0, sticky="w")
        self.picker.bind("<<ComboboxSelected>>", lambda e: self._on_model(self.version.get()))
        self.ab_button = ttk.Button(self, text="A/B: both models", command=on_ab)
        self.ab_button.grid(row=0, column=1, sticky="e", padx=(8, 0))
        self.columnconfigure(1, weight=1)
        # IndexTTS-2.5 only
        self.v25 = ttk.Frame(self)
        ttk.Label(self.v25, text="Language").grid(row=0, column=0, sticky="w")
        self.language = tk.StringVar(self, value=AUTO)
        self._labels = {AUTO: "From the text"} | {c: language_label(c) for c in SUPPORTED_LANGUAGES}
        self.language_label = tk.StringVar(self, value=self._labels[AUTO])
        self.lang_picker = ttk.Combobox(self.v25, textvariable=self.language_label, values=list(self._labels.values()),
                                        state="readonly", width=18)
        self.lang_picker.grid(row=0, column=1, sticky="w", padx=6, pady=2)
        self.lang_picker.bind("<<ComboboxSelected>>", lambda e: self._language_picked())
        ttk.Label(self.v25, text="Duration").grid(row=1, column=0, sticky="w")
        self.duration = tk.DoubleVar(self, value=1.0)
        self.duration_text = tk.StringVar(self, value="1.00\u00d7")
        self.slider = ttk.Scale(self.v25, from_=DURATION.low or 0.5, to=DURATION.high or 2.0, variable=self.duration,
                                orient="horizontal", length=150, command=lambda v: self._duration_moved())
        self.slider.grid(row=1, column=1, sticky="w", padx=6, pady=2)
        ttk.Label(self.v25, textvariable=self.duration_text, width=6).grid(row=1, column=2, sticky="w")
        self.show_for("2.0")

    # --- state ----------------------------------------------------------------------------------------------
    def set_versions(self, versions: list[str], current: str) -> None:
        """The models the folder holds (A/B needs both) and the one loaded."""
        self.picker.configure(values=versions or [current])
        self.version.set(current)
        self.ab_button.state(["!disabled"] if {"2.0", "2.5"} <= set(versions) else ["disabled"])
        self.show_for(current)

    def show_for(self, version: str) -> None:
        """Language and duration are shown for IndexTTS-2.5 only."""
        if version == "2.5":
            self.v25.grid(row=1, column=0, columnspan=2, sticky="w", pady=(6, 0))
        else:
            self.v25.grid_remove()

    @property
    def duration_visible(self) -> bool:
        return bool(self.v25.winfo_manager())

    def _language_picked(self) -> None:
        chosen = self.language_label.get()
        self.language.set(next(code for code, label in self._labels.items() if label == chosen))
        self._on_change()

    def set_language(self, code: str) -> None:
        self.language.set(code if code in self._labels else AUTO)
        self.language_label.set(self._labels[self.language.get()])
        self._on_change()

    def _duration_moved(self) -> None:
        value = round(float(self.duration.get()) * 20) / 20  # steps of 0.05
        if value != self.duration.get():
            self.duration.set(value)
        self.duration_text.set(f"{value:.2f}\u00d7")
        self._on_change()

    # --- what the request gets ------------------------------------------------------------------------------
    def lang_for(self, text: str) -> str:
        """The chosen language, or the one the text's script suggests."""
        code = self.language.get()
        return guess_language(text) if code == AUTO else code

    def lang(self) -> str | None:
        code = self.language.get()
        return None if code == AUTO else code

    def duration_factor(self) -> float:
        return round(float(self.duration.get()) * 20) / 20

    @staticmethod
    def default_tokens(lang: str) -> int:
        return default_segment_tokens(lang)
