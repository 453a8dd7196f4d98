"""The main window's size and place: small enough for a 1366×768 laptop (or 1920×1080 at 150 %), remembered
between runs, never restored larger than the screen it opens on.
"""

from __future__ import annotations

import re
import tkinter as tk
from dataclasses import dataclass
from tkinter import ttk

DEFAULT_SIZE = (1240, 700)  # fits 1280×720 with the window frame and a task bar
MIN_SIZE = (1000, 620)  # at most 1024×640: every control still reachable (the right column scrolls)
_GEOMETRY = re.compile(r"^(\d+)x(\d+)([+-]-?\d+)?([+-]-?\d+)?$")


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    x: int | None = None
    y: int | None = None

    @classmethod
    def parse(cls, text: str) -> Geometry | None:
        m = _GEOMETRY.match(text.strip()) if text else None
        if m is None:
            return None
        x = int(m.group(3).replace("+-", "-")) if m.group(3) else None
        y = int(m.group(4).replace("+-", "-")) if m.group(4) else None
        return cls(int(m.group(1)), int(m.group(2)), x, y)

    def __str__(self) -> str:
        place = f"+{self.x}+{self.y}" if self.x is not None and self.y is not None else ""
        return f"{self.width}x{self.height}{place}"


def fit(saved: Geometry | None, screen: tuple[int, int], minimum: tuple[int, int] = MIN_SIZE) -> Geometry:
    """``saved`` (or the default size) shrunk to the screen and moved onto it."""
    sw, sh = screen
    want = saved or Geometry(*DEFAULT_SIZE)
    w = max(min(want.width, sw), min(minimum[0], sw))
    h = max(min(want.height, sh), min(minimum[1], sh))
    if want.x is None or want.y is None:
        return Geometry(w, h, max(0, (sw - w) // 2), max(0, (sh - h) // 3))
    return Geometry(w, h, min(max(0, want.x), sw - w), min(max(0, want.y), sh - h))


def place(root: tk.Tk, saved: str) -> Geometry:
    """Size and place the window from the saved geometry, fitted to this screen; its minimum size too."""
    screen = (root.winfo_screenwidth(), root.winfo_screenheight())
    root.minsize(min(MIN_SIZE[0], screen[0]), min(MIN_SIZE[1], screen[1]))
    geometry = fit(Geometry.parse(saved), screen)
    root.geometry(str(geometry))
    return geometry


def current(root: tk.Tk) -> str:
    """The window's geometry to remember (its normal size, not maximised or minimised)."""
    if root.state() != "normal":
        return ""
    return str(Geometry(root.winfo_width(), root.winfo_height(), root.winfo_x(), root.winfo_y()))


def restore_sash(panes: ttk.PanedWindow, position: int) -> None:
    """Put the first divider of ``panes`` at ``position`` once the panes have their real width (a remembered
    position larger than the window is left alone)."""
    bound: list[str] = []

    def apply(event: tk.Event) -> None:
        if event.width <= 1:
            return
        if position < event.width:
            panes.sashpos(0, position)
        panes.unbind("<Configure>", bound[0])

    bound.append(panes.bind("<Configure>", apply, add="+"))
