"""Logging for the desktop app: a rotating file in the user log folder and a 'View log' window."""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import platform
import sys
import tkinter as tk
from pathlib import Path
from tkinter import ttk
from typing import IO

LOG_NAME = "indextts2-desktop.log"
FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s: %(message)s"

_fault_file: IO[str] | None = None
_log_path: Path | None = None


def current_log_path() -> Path | None:
    """The log file :func:`setup_logging` last opened (None before that)."""
    return _log_path


def setup_logging(log_dir: Path, level: int = logging.INFO) -> Path:
    """Attach a rotating file handler (1 MB x 3) to the root logger; returns the log file path.

    Calling it again with another folder moves the log there (tests use one folder per app).
    """
    global _fault_file, _log_path
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_NAME
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_indextts2", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler._indextts2 = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _log_path = path
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    # Native crashes (PortAudio, torch kernels) leave no Python traceback; faulthandler writes one.
    try:
        if _fault_file is not None:
            faulthandler.disable()
            _fault_file.close()
        _fault_file = open(log_dir / "faulthandler.log", "a", encoding="utf-8")  # noqa: SIM115 - kept open on purpose
        faulthandler.enable(_fault_file)
    except (OSError, RuntimeError):
        logging.getLogger(__name__).warning("faulthandler could not be enabled", exc_info=True)
    logging.getLogger(__name__).info(
        "log started: python %s on %s, argv=%s", sys.version.split()[0], platform.platform(), sys.argv
    )
    return path


def read_tail(path: Path, max_chars: int = 200_000) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_chars))
            return f.read()
    except OSError as exc:
        return f"(could not read the log file {path}: {exc.strerror or exc})"


class LogWindow(tk.Toplevel):
    """Shows the end of the log file, with Refresh and Copy."""

    def __init__(self, parent: tk.Misc, path: Path) -> None:
        super().__init__(parent)
        self.path = path
        self.title(f"Log - {path}")
        self.geometry("900x500")
        bar = ttk.Frame(self, padding=(8, 6))
        bar.pack(fill="x")
        ttk.Label(bar, text=str(path)).pack(side="left")
        ttk.Button(bar, text="Copy all", command=self.copy).pack(side="right")
        ttk.Button(bar, text="Refresh", command=self.refresh).pack(side="right", padx=6)
        self.text = tk.Text(self, wrap="none", font="TkFixedFont")
        scroll = ttk.Scrollbar(self, command=self.text.yview)
        self.text.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.text.pack(fill="both", expand=True)
        self.bind("<Escape>", lambda e: self.destroy())
        self.refresh()

    def refresh(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        self.text.insert("1.0", read_tail(self.path))
        self.text.configure(state="disabled")
        self.text.see("end")

    def content(self) -> str:
        return self.text.get("1.0", "end-1c")

    def copy(self) -> None:
        self.clipboard_clear()
        self.clipboard_append(self.content())
