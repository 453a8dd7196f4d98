"""A waveform drawn on a Canvas (min/max per pixel column) with a position cursor; click to seek.

Its colours come from the theme's palette (:mod:`desktop.theme`) and follow a theme switch."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable

import numpy as np

from desktop.theme import THEME_EVENT, palette


class Waveform(tk.Canvas):
    themed = True  # recoloured by the theme event, not by the generic pass

    def __init__(self, parent: tk.Misc, height: int = 120, on_seek: Callable[[float], None] | None = None) -> None:
        super().__init__(parent, height=height, background=palette(parent).wave_bg, highlightthickness=0)
        self._audio = np.zeros(0, dtype=np.float32)
        self._rate = 1
        self._on_seek = on_seek
        self.cursor_seconds = 0.0
        self.bind("<Configure>", lambda e: self.redraw())
        self.bind("<Button-1>", self._click)
        self.bind(THEME_EVENT, lambda e: self.redraw(), add="+")

    @property
    def duration(self) -> float:
        return len(self._audio) / self._rate

    def set_audio(self, audio: np.ndarray, sample_rate: int) -> None:
        a = np.asarray(audio)
        self._audio = (a.astype(np.float32) / 32768.0) if a.dtype == np.int16 else a.astype(np.float32)
        self._rate = sample_rate
        self.cursor_seconds = 0.0
        self.redraw()

    def clear(self) -> None:
        self.set_audio(np.zeros(0, dtype=np.float32), 1)

    def columns(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) of the audio per pixel column."""
        n = len(self._audio)
        if n == 0 or width <= 0:
            return np.zeros(0), np.zeros(0)
        edges = np.linspace(0, n, width + 1).astype(int)
        edges[-1] = n
        lo = np.minimum.reduceat(self._audio, np.minimum(edges[:-1], n - 1))
        hi = np.maximum.reduceat(self._audio, np.minimum(edges[:-1], n - 1))
        return lo, hi

    def redraw(self) -> None:
        self.delete("all")
        colours = palette(self)
        self.configure(background=colours.wave_bg)
        w, h = max(1, self.winfo_width()), max(1, self.winfo_height())
        mid = h / 2
        self.create_line(0, mid, w, mid, fill=colours.wave_axis, tags=("axis",))
        lo, hi = self.columns(w)
        if lo.size:
            coords = []
            for x, (a, b) in enumerate(zip(lo, hi, strict=True)):
                coords.append((x, mid - b * (mid - 4), x, mid - a * (mid - 4) + 1))
            for c in coords:
                self.create_line(*c, fill=colours.wave, tags=("wave",))
        self.create_line(0, 0, 0, h, fill=colours.cursor, width=2, tags=("cursor",))
        self.set_cursor(self.cursor_seconds)

    def set_cursor(self, seconds: float) -> None:
        self.cursor_seconds = seconds
        w, h = max(1, self.winfo_width()), max(1, self.winfo_height())
        x = 0 if self.duration <= 0 else min(w - 1, seconds / self.duration * w)
        self.coords("cursor", x, 0, x, h)

    def cursor_x(self) -> float:
        return self.coords("cursor")[0] if self.coords("cursor") else 0.0

    def _click(self, event: tk.Event) -> None:
        if self.duration > 0 and self._on_seek is not None:
            self._on_seek(max(0.0, min(1.0, event.x / max(1, self.winfo_width()))) * self.duration)


class LevelMeter(tk.Canvas):
    """A horizontal input level bar (0..1): green, amber above 0.7, red at clipping; colours from the palette."""

    themed = True

    def __init__(self, parent: tk.Misc, height: int = 16) -> None:
        super().__init__(parent, height=height, background=palette(parent).wave_bg, highlightthickness=0)
        self._height = height
        self.level = 0.0
        self.create_rectangle(0, 0, 0, height, fill=palette(parent).meter_ok, width=0, tags=("bar",))
        self.bind(THEME_EVENT, lambda e: self.set_level(self.level), add="+")

    def set_level(self, level: float) -> None:
        self.level = level
        colours = palette(self)
        self.configure(background=colours.wave_bg)
        colour = colours.meter_clip if level >= 0.99 else colours.meter_hot if level > 0.7 else colours.meter_ok
        self.coords("bar", 0, 0, self.winfo_width() * min(1.0, level), self._height)
        self.itemconfigure("bar", fill=colour)
