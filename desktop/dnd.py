"""Dropping files onto the window (``tkinterdnd2``, George Petasis' tkDnD).

:func:`enable_drop` makes a widget (and, as tkDnD looks up the parents, everything inside it) a target for files
dropped from the file manager; the handler gets the dropped paths. Without ``tkinterdnd2`` (or without tkDnD for
this platform) nothing is registered, the file pickers remain, and only the log says why.

:func:`dropped_paths` turns tkDnD's event data (a Tcl list: ``{/path/with space.wav} /other.wav``) into paths;
a drop handler is ``lambda paths: ...``, so tests drive the same handler with :func:`deliver`.
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aif", ".aiff"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".srt", ".vtt", ".script"})

DropHandler = Callable[[list[Path]], object]
_unavailable: dict[str, str] = {}  # interpreter -> why drag and drop is off (logged once)


def dropped_paths(widget: tk.Misc, data: str) -> list[Path]:
    """The files in tkDnD's drop data."""
    return [Path(p) for p in widget.tk.splitlist(data) if p]


def only(paths: Iterable[Path], suffixes: Iterable[str]) -> list[Path]:
    wanted = set(suffixes)
    return [p for p in paths if p.suffix.lower() in wanted]


def deliver(widget: tk.Misc, data: str) -> object:
    """Run ``widget``'s drop handler on tkDnD-style ``data`` exactly as a real drop does (tests, scripting)."""
    handler: DropHandler | None = getattr(widget, "_drop_handler", None)
    if handler is None:
        raise LookupError(f"{widget} does not accept drops")
    return handler(dropped_paths(widget, data))


def _load_tkdnd(widget: tk.Misc) -> bool:
    key = str(widget.tk.interpaddr())
    if key in _unavailable:
        return False
    try:
        import tkinterdnd2

        tkinterdnd2.TkinterDnD._require(widget.winfo_toplevel())
        return True
    except Exception as exc:  # not installed, or no tkDnD build for this platform/Tcl
        _unavailable[key] = str(exc)
        log.info("drag and drop unavailable (the file pickers still work): %s", exc)
        return False


def enable_drop(widget: tk.Misc, handler: DropHandler) -> bool:
    """Accept files dropped onto ``widget``; True when drag and drop works here."""
    target: Any = widget  # tkinterdnd2 adds drop_target_register/dnd_bind to every widget class
    target._drop_handler = handler
    if not _load_tkdnd(widget):
        return False
    import tkinterdnd2

    def on_drop(event: Any) -> str:  # an exception reaches the window's report_callback_exception, as any callback
        handler(dropped_paths(widget, event.data or ""))
        return str(getattr(event, "action", "copy"))

    try:
        target.drop_target_register(tkinterdnd2.DND_FILES)
        target.dnd_bind("<<Drop>>", on_drop)
    except (tk.TclError, AttributeError) as exc:
        log.info("drag and drop unavailable for %s: %s", widget, exc)
        return False
    return True
