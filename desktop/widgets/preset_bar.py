"""The preset bar: choose, load, save, import and delete named presets.

:class:`PresetBar` owns the preset store and the chosen name; what a preset holds is read from and written to
the rest of the window through the ``capture`` and ``apply`` callbacks it is given.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from desktop.dialogs import PRESET_FILETYPES, DialogFn
from desktop.errors import ReportError
from desktop.settings import Preset, PresetError, PresetStore


class PresetBar(ttk.LabelFrame):
    """A combobox of the saved presets with Load, Save… and Delete.

    ``capture()`` returns the window's current voice/emotion/settings as an unnamed :class:`Preset`;
    ``apply(preset)`` puts a preset into the window. ``dialog`` asks for names, files and confirmations,
    ``report_error`` shows failures, ``on_status`` gets a line for the status bar.
    """

    def __init__(
        self,
        parent: tk.Misc,
        store: PresetStore,
        *,
        capture: Callable[[], Preset],
        apply: Callable[[Preset], None],
        dialog: DialogFn,
        report_error: ReportError,
        on_status: Callable[[str], None],
    ) -> None:
        super().__init__(parent, text="Presets", padding=6)
        self.store = store
        self._capture = capture
        self._apply = apply
        self._dialog = dialog
        self._report_error = report_error
        self._on_status = on_status
        self.name = tk.StringVar(self, value="")
        self.box = ttk.Combobox(self, textvariable=self.name, width=14)
        self.box.pack(side="left", fill="x", expand=True)
        ttk.Button(self, text="Load", command=lambda: self.load(self.name.get())).pack(side="left", padx=4)
        ttk.Button(self, text="Save\u2026", command=self.save_dialog).pack(side="left")
        ttk.Button(self, text="Delete", command=self.delete).pack(side="left", padx=4)
        self.refresh()

    def refresh(self) -> None:
        """Offer the readable presets (unreadable files are skipped and logged by the store)."""
        self.box.configure(values=self.store.names())

    def save_dialog(self, base: Preset | None = None) -> Path | None:
        """Ask for a name and save ``base`` (default: what the window holds now) under it."""
        name = self._dialog(
            "string",
            parent=self.winfo_toplevel(),
            title="Save preset",
            prompt="Preset name:",
            initialvalue=self.name.get(),
        )
        if not name or not name.strip():
            return None
        preset = base or self._capture()
        preset.name = name.strip()
        try:
            path = self.store.save(preset)
        except OSError as exc:
            self._report_error("Save preset", exc)
            return None
        self.refresh()
        self.name.set(preset.name)
        self._on_status(f"Preset '{preset.name}' saved.")
        return path

    def load(self, name: str) -> bool:
        if not name:
            self._report_error("Preset", "Choose a preset first.")
            return False
        try:
            preset = self.store.load(name)
        except PresetError as exc:
            self._report_error("Preset", exc, prefix=f"Could not load the preset '{name}': ")
            return False
        self._apply(preset)
        self._on_status(f"Preset '{preset.name}' loaded.")
        return True

    def import_file(self) -> bool:
        """Ask for a preset file, copy it into the store and apply it."""
        path = self._dialog(
            "open_file", parent=self.winfo_toplevel(), title="Import a preset", filetypes=PRESET_FILETYPES
        )
        if not path:
            return False
        try:
            preset = self.store.load_file(Path(path))
            self.store.save(preset)
        except (PresetError, OSError) as exc:
            self._report_error("Import preset", exc, prefix=f"Could not import {Path(path).name}: ")
            return False
        self.refresh()
        self.name.set(preset.name)
        self._apply(preset)
        return True

    def delete(self) -> None:
        name = self.name.get()
        if name and self._dialog(
            "yesno", parent=self.winfo_toplevel(), title="Delete preset", message=f"Delete the preset '{name}'?"
        ):
            self.store.delete(name)
            self.name.set("")
            self.refresh()
