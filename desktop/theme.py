"""The look of the app: Sun Valley (``sv-ttk``, Windows 11 style) light or dark, following the OS (``darkdetect``)
unless Settings say otherwise, and one :class:`Palette` that every custom widget reads.

Theming is central: :func:`apply_theme` switches the ttk theme, recolours every classic Tk widget of every window
(text boxes, lists, canvases, menus) from the palette, and then sends ``<<PaletteChanged>>`` to every widget
so a custom widget (the waveform, the level meter) redraws itself. A new widget follows the theme by
construction: it reads :func:`palette` when it is built and binds :data:`THEME_EVENT`::

    self.configure(background=palette(self).wave_bg)
    self.bind(THEME_EVENT, lambda e: self.recolour(palette(self)), add="+")

Classic Tk widgets need nothing: :func:`apply_theme` recolours them, and a window built later gets the palette's
colours through the option database. Without ``sv-ttk`` the stock ``clam`` theme is used with the same palette.
"""

from __future__ import annotations

import logging
import sys
import tkinter as tk
import tkinter.font as tkfont
from dataclasses import dataclass
from tkinter import ttk
from typing import Literal

log = logging.getLogger(__name__)

ThemeMode = Literal["system", "light", "dark"]
THEME_MODES: tuple[ThemeMode, ...] = ("system", "light", "dark")
THEME_LABELS: dict[str, str] = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
THEME_EVENT = "<<PaletteChanged>>"  # ttk's own <<ThemeChanged>> comes before the palette is applied


@dataclass(frozen=True)
class Palette:
    name: Literal["light", "dark"]
    bg: str  # window background
    fg: str
    muted: str  # secondary text (device note, hints)
    field_bg: str  # text boxes, lists, tables
    field_fg: str
    select_bg: str
    select_fg: str
    accent: str
    warning: str
    error: str
    wave_bg: str  # waveform and level meter
    wave: str
    wave_axis: str
    cursor: str
    meter_ok: str
    meter_hot: str
    meter_clip: str


LIGHT = Palette("light", bg="#fafafa", fg="#1c1c1c", muted="#5f6368", field_bg="#ffffff", field_fg="#1c1c1c",
                select_bg="#2f60d8", select_fg="#ffffff", accent="#005fb8", warning="#b45309", error="#b91c1c",
                wave_bg="#eef2f7",
                wave="#1f6fd1", wave_axis="#c5cdd8", cursor="#d9480f", meter_ok="#2f9e44", meter_hot="#f08c00",
                meter_clip="#e03131")
DARK = Palette("dark", bg="#1c1c1c", fg="#fafafa", muted="#a0a4ab", field_bg="#2b2b2b", field_fg="#f2f2f2",
               select_bg="#2f60d8", select_fg="#ffffff", accent="#57c8ff", warning="#f59f00", error="#ff6b6b",
               wave_bg="#141821",
               wave="#5fb3f9", wave_axis="#3a4150", cursor="#ffcc66", meter_ok="#51cf66", meter_hot="#fcc419",
               meter_clip="#ff6b6b")
PALETTES = {"light": LIGHT, "dark": DARK}

_current: dict[str, Palette] = {}  # Tcl interpreter name -> palette in use there


def system_theme() -> Literal["light", "dark"]:
    """The OS setting (``darkdetect``); light when it cannot be told."""
    try:
        import darkdetect

        return "dark" if (darkdetect.theme() or "").lower() == "dark" else "light"
    except Exception as exc:  # not installed, or no way to ask on this desktop
        log.debug("cannot detect the system theme: %s", exc)
        return "light"


def resolve(mode: str) -> Literal["light", "dark"]:
    if mode == "dark":
        return "dark"
    if mode == "light":
        return "light"
    return system_theme()  # "system", and anything unknown (an old settings file)


def palette(widget: tk.Misc) -> Palette:
    """The palette in use for ``widget``'s application (light before any theme is applied)."""
    return _current.get(str(widget.tk.interpaddr()), LIGHT)


def _sun_valley(root: tk.Tk, name: str) -> bool:
    try:
        import sv_ttk
    except ImportError:
        return False
    try:
        sv_ttk.set_theme(name, root)
    except (tk.TclError, RuntimeError, TypeError) as exc:
        log.warning("the Sun Valley theme could not be used: %s", exc)
        return False
    return True


def _platform_fonts(root: tk.Misc) -> None:
    """Sun Valley asks for Segoe UI Variable: elsewhere than Windows use the platform's own default family."""
    if sys.platform == "win32":
        return
    family = tkfont.nametofont("TkDefaultFont", root).actual("family")
    for name in tkfont.names(root):
        if name.startswith("SunValley"):
            tkfont.nametofont(name, root).configure(family=family)


def _styles(root: tk.Misc, p: Palette) -> None:
    style = ttk.Style(root)
    style.configure("Muted.TLabel", foreground=p.muted)
    style.configure("Warning.TLabel", foreground=p.warning)
    style.configure("Error.TLabel", foreground=p.error)
    style.configure("Title.TLabel", font=("TkHeadingFont", 15, "bold"))
    style.configure("Strong.TLabel", font=("TkDefaultFont", 10, "bold"))
    style.configure("Treeview", rowheight=24)


_CLASSIC = {
    "Text": {"background": "field_bg", "foreground": "field_fg", "insertbackground": "field_fg",
             "selectbackground": "select_bg", "selectforeground": "select_fg", "highlightbackground": "bg"},
    "Listbox": {"background": "field_bg", "foreground": "field_fg", "selectbackground": "select_bg",
                "selectforeground": "select_fg", "highlightbackground": "bg"},
    "Canvas": {"background": "bg", "highlightbackground": "bg"},
    "Toplevel": {"background": "bg"},
    "Tk": {"background": "bg"},
    "Frame": {"background": "bg"},
    "Menu": {"background": "bg", "foreground": "fg", "activebackground": "select_bg", "activeforeground": "select_fg"},
}


def _recolour(widget: tk.Misc, p: Palette) -> None:
    """Classic Tk widgets from the palette (custom widgets mark themselves ``themed`` and recolour on the event)."""
    options = _CLASSIC.get(widget.winfo_class())
    if options and not getattr(widget, "themed", False):
        try:
            widget.configure(**{opt: getattr(p, key) for opt, key in options.items()})
        except tk.TclError:
            pass
    for child in widget.winfo_children():
        _recolour(child, p)


def _option_database(root: tk.Misc, p: Palette) -> None:
    """Windows built later (dialogs, other helpers' views) start with the palette's colours."""
    for cls, options in _CLASSIC.items():
        for opt, key in options.items():
            root.option_add(f"*{cls}.{opt}", getattr(p, key), "interactive")


def _notify(widget: tk.Misc) -> None:
    try:
        widget.event_generate(THEME_EVENT)
    except tk.TclError:
        return
    for child in widget.winfo_children():
        _notify(child)


def apply_theme(root: tk.Tk, mode: str) -> Palette:
    """Switch the whole application to ``mode`` (system, light or dark); returns the palette now in use."""
    p = PALETTES[resolve(mode)]
    if _sun_valley(root, p.name):
        _platform_fonts(root)
    else:
        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        style.configure(".", background=p.bg, foreground=p.fg, fieldbackground=p.field_bg,
                        selectbackground=p.select_bg, selectforeground=p.select_fg, troughcolor=p.wave_axis)
    root.update_idletasks()  # ttk's <<ThemeChanged>> (Sun Valley's tk_setPalette) first, then the palette
    _current[str(root.tk.interpaddr())] = p
    _styles(root, p)
    _option_database(root, p)
    _recolour(root, p)
    _notify(root)
    return p
