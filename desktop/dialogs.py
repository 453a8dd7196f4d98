"""Every file dialog and message box of the app goes through ONE function: :func:`ask`.

``ask(kind, **options)`` dispatches to the current handler. The default handler shows real Tk dialogs;
tests install their own with :func:`set_handler` (or pass one to the app) so nothing ever blocks on a
modal window.

Kinds and their options / return values:

* ``"error"``, ``"warning"``, ``"info"``: ``title``, ``message``, optional ``details`` -> ``None``
* ``"yesno"``: ``title``, ``message`` -> ``bool``
* ``"open_file"``: ``title``, ``filetypes``, ``initialdir`` -> path ``str`` or ``None``
* ``"save_file"``: ``title``, ``filetypes``, ``initialdir``, ``initialfile``, ``defaultextension``
  -> ``str`` or ``None``
  (the native dialog itself asks before overwriting an existing file)
* ``"directory"``: ``title``, ``initialdir`` -> ``str`` or ``None``
* ``"string"``: ``title``, ``prompt``, ``initialvalue`` -> ``str`` or ``None``
"""

from __future__ import annotations

import errno
import logging
import re
import tkinter as tk
import traceback
from collections.abc import Callable
from tkinter import filedialog, messagebox, simpledialog, ttk
from typing import Any

from core.api import Cancelled, EngineError
from desktop.errors import UserError
from desktop.logs import current_log_path

log = logging.getLogger(__name__)

DialogFn = Callable[..., Any]

KINDS = ("error", "warning", "info", "yesno", "open_file", "save_file", "directory", "string")

AUDIO_FILETYPES = [("Audio files", "*.wav *.flac *.ogg *.mp3 *.m4a *.aiff *.aif"), ("All files", "*")]
PRESET_FILETYPES = [("Preset files", "*.json"), ("All files", "*")]


# What the engine tells a command-line user to do, in the GUI's words (buttons and menus, never commands).
_GUI_REMEDIES = (
    ("Run the model setup (python main.py models download) or choose the model folder in Settings.", ""),
    ("Run 'python main.py models download'", "Download them with 'Set up models' (on the first-run screen)"),
    ("run 'python main.py models download'", "download them with 'Set up models' (on the first-run screen)"),
    ("choose another name or pass --overwrite", "choose another name"),
)
_CLI_ASIDE = re.compile(r"\s*\([^()]*(?:python main\.py|--[a-z])[^()]*\)")  # "(python main.py project render x)"
_CLI_SENTENCE = re.compile(  # a whole sentence that is command-line advice ("Pass --out file.wav for the result.")
    r"(?:^|(?<=[.!?]\s))[^.!?]*(?:python main\.py|\bpass --|\s--[a-z][\w-]*)[^!?]*?[.!?](?=\s|$)\s*", re.IGNORECASE
)


def gui_words(message: str) -> str:
    """A message from ``core`` without its command-line advice: what happened stays, the GUI says what to do."""
    for cli, gui in _GUI_REMEDIES:
        message = message.replace(cli, gui)
    original, message = message, _CLI_ASIDE.sub("", message)
    return _CLI_SENTENCE.sub("", message).strip() or original


def is_expected(exc: BaseException) -> bool:
    """True for failures with a message meant for the user; anything else is a bug (logged with its traceback)."""
    return isinstance(exc, (UserError, EngineError, MemoryError, OSError))


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(short human message, details) for any exception; never shows a traceback as the message.

    An unexpected exception (a bug) is called an internal error and the message names the log file.
    """
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, UserError):
        return str(exc), getattr(exc, "details", "") or details
    if isinstance(exc, (EngineError, Cancelled)):
        return gui_words(str(exc)), details
    if isinstance(exc, MemoryError):
        return "Not enough memory for this job. Try shorter text or close other programs.", details
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        if exc.errno == errno.ENOSPC:
            return f"The disk is full{where}. Free some space or choose another folder.", details
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"Permission denied{where}. Choose a folder you can write to.", details
        reason = exc.strerror or str(exc)
        return f"A file operation failed{where}: {reason}.", details
    log_file = current_log_path()
    log_words = f" to the log file {log_file}" if log_file is not None else " to the log"
    return f"Something went wrong inside the app (an internal error). The details were written{log_words}.", details


class ErrorDialog(tk.Toplevel):
    """A short message, a 'Details' expander with the technical text, Copy and OK."""

    def __init__(self, parent: tk.Misc, title: str, message: str, details: str = "", icon: str = "error") -> None:
        super().__init__(parent)
        self.title(title)
        self.resizable(True, True)
        self.transient(parent.winfo_toplevel())
        frame = ttk.Frame(self, padding=12)
        frame.pack(fill="both", expand=True)
        glyph = {"error": "\u26d4", "warning": "\u26a0", "info": "\u2139"}.get(icon, "")
        ttk.Label(frame, text=f"{glyph}  {message}", wraplength=460, justify="left").pack(anchor="w", fill="x")
        self._details = tk.Text(frame, height=12, width=80, wrap="none")
        self._details.insert("1.0", details)
        self._details.configure(state="disabled")
        buttons = ttk.Frame(frame)
        buttons.pack(fill="x", pady=(10, 0))
        if details:
            self._toggle = ttk.Button(buttons, text="Details \u25b8", command=self._toggle_details)
            self._toggle.pack(side="left")
            ttk.Button(buttons, text="Copy", command=lambda: self._copy(message, details)).pack(side="left", padx=6)
        ok = ttk.Button(buttons, text="OK", command=self.destroy)
        ok.pack(side="right")
        self.bind("<Escape>", lambda e: self.destroy())
        self.bind("<Return>", lambda e: self.destroy())
        ok.focus_set()

    def _toggle_details(self) -> None:
        if self._details.winfo_ismapped():
            self._details.pack_forget()
            self._toggle.configure(text="Details \u25b8")
        else:
            self._details.pack(fill="both", expand=True, pady=(8, 0), before=self._toggle.master)
            self._toggle.configure(text="Details \u25be")

    def _copy(self, message: str, details: str) -> None:
        self.clipboard_clear()
        self.clipboard_append(f"{message}\n\n{details}")


def tk_dialog(kind: str, *, parent: tk.Misc | None = None, **opts: Any) -> Any:
    """The real handler: Tk's native dialogs, and :class:`ErrorDialog` for messages."""
    title = opts.get("title", "IndexTTS2 Desktop")
    if kind in ("error", "warning", "info"):
        if parent is None:
            messagebox.showerror(title, opts.get("message", ""))
            return None
        dialog = ErrorDialog(parent, title, opts.get("message", ""), opts.get("details", ""), icon=kind)
        dialog.grab_set()
        parent.wait_window(dialog)
        return None
    if kind == "yesno":
        if parent is None:
            return messagebox.askyesno(title, opts.get("message", ""))
        return messagebox.askyesno(title, opts.get("message", ""), parent=parent)
    common = {
        k: v for k, v in opts.items() if k in ("title", "initialdir", "filetypes", "initialfile", "defaultextension")
    }
    if kind == "open_file":
        return filedialog.askopenfilename(parent=parent, **common) or None
    if kind == "save_file":
        return filedialog.asksaveasfilename(parent=parent, confirmoverwrite=True, **common) or None
    if kind == "directory":
        return filedialog.askdirectory(parent=parent, title=title, initialdir=opts.get("initialdir")) or None
    if kind == "string":
        return simpledialog.askstring(
            title, opts.get("prompt", ""), initialvalue=opts.get("initialvalue", ""), parent=parent
        )
    raise ValueError(f"unknown dialog kind {kind!r}")


_handler: DialogFn = tk_dialog


def set_handler(fn: DialogFn) -> DialogFn:
    """Install a new handler (tests); returns the previous one."""
    global _handler
    previous, _handler = _handler, fn
    return previous


def ask(kind: str, **options: Any) -> Any:
    """Show a dialog of ``kind`` through the current handler (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown dialog kind {kind!r}")
    if kind in ("error", "warning"):
        log.warning("%s shown to the user: %s", kind, options.get("message"))
    return _handler(kind, **options)
