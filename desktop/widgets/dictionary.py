"""The pronunciation dictionary editor (Tools → Pronunciation dictionary…): a table of term → reading per language,
with import and export in the glossary YAML format (:mod:`desktop.pronunciation`).

Edits stay in the table until **Save**, which writes the file and hands the new glossary to ``on_saved`` (the
window gives it to the engine, refreshes the segment preview and tells other views).
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from desktop.dialogs import DialogFn
from desktop.errors import ReportError
from desktop.pronunciation import (
    ANY,
    FILETYPES,
    LANGUAGE_LABELS,
    LANGUAGES,
    DictionaryError,
    Entry,
    PronunciationDictionary,
    read_file,
    write_file,
)

Glossary = dict[str, str | dict[str, str]]


class DictionaryDialog(tk.Toplevel):
    def __init__(
        self,
        parent: tk.Misc,
        store: PronunciationDictionary,
        *,
        dialog: DialogFn,
        report_error: ReportError,
        on_saved: Callable[[Glossary], None],
    ) -> None:
        super().__init__(parent)
        self.title("Pronunciation dictionary")
        self.transient(parent.winfo_toplevel())
        self.store = store
        self._dialog = dialog
        self._report_error = report_error
        self._on_saved = on_saved
        self.term = tk.StringVar(self, value="")
        self.reading = tk.StringVar(self, value="")
        self.language = tk.StringVar(self, value=LANGUAGE_LABELS[ANY])
        self.changed = False

        body = ttk.Frame(self, padding=12)
        body.pack(fill="both", expand=True)
        ttk.Label(
            body,
            text="How words and names are read: Chinese as pinyin with tone digits (chong2 qing4), English as a "
            "respelling (Index T T S). Applied before the text is split into segments.",
            wraplength=560,
            justify="left",
            style="Muted.TLabel",
        ).pack(fill="x")
        table = ttk.Frame(body)
        table.pack(fill="both", expand=True, pady=(8, 0))
        self.tree = ttk.Treeview(table, columns=("term", "language", "reading"), show="headings", height=10)
        for col, label, width in (("term", "Term", 160), ("language", "Language", 110), ("reading", "Reading", 260)):
            self.tree.heading(col, text=label)
            self.tree.column(col, width=width, stretch=col != "language")
        scroll = ttk.Scrollbar(table, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="left", fill="y")
        self.tree.bind("<<TreeviewSelect>>", lambda e: self._pick())

        edit = ttk.Frame(body)
        edit.pack(fill="x", pady=(8, 0))
        ttk.Label(edit, text="Term").grid(row=0, column=0, sticky="w")
        ttk.Label(edit, text="Language").grid(row=0, column=1, sticky="w", padx=6)
        ttk.Label(edit, text="Reading").grid(row=0, column=2, sticky="w")
        self.term_entry = ttk.Entry(edit, textvariable=self.term, width=18)
        self.term_entry.grid(row=1, column=0, sticky="ew")
        ttk.Combobox(
            edit, textvariable=self.language, values=[LANGUAGE_LABELS[k] for k in LANGUAGES], state="readonly",
            width=13,
        ).grid(row=1, column=1, padx=6)
        reading = ttk.Entry(edit, textvariable=self.reading, width=28)
        reading.grid(row=1, column=2, sticky="ew")
        reading.bind("<Return>", lambda e: self.add_entry())
        ttk.Button(edit, text="Add / update", command=self.add_entry).grid(row=1, column=3, padx=(6, 0))
        ttk.Button(edit, text="Remove", command=self.remove_selected).grid(row=1, column=4, padx=(6, 0))
        edit.columnconfigure(0, weight=1)
        edit.columnconfigure(2, weight=2)

        buttons = ttk.Frame(body)
        buttons.pack(fill="x", pady=(12, 0))
        ttk.Button(buttons, text="Import\u2026", command=self.import_file).pack(side="left")
        ttk.Button(buttons, text="Export\u2026", command=self.export_file).pack(side="left", padx=6)
        ttk.Button(buttons, text="Close", command=self.close).pack(side="right")
        ttk.Button(buttons, text="Save", style="Accent.TButton", command=self.save).pack(side="right", padx=6)
        self.bind("<Escape>", lambda e: self.close())
        self.protocol("WM_DELETE_WINDOW", self.close)
        try:
            self.set_entries(store.load())
        except DictionaryError as exc:
            self._report_error("Pronunciation dictionary", exc)
        self.changed = False
        self.term_entry.focus_set()

    # --- the table ------------------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        return [self._row(iid) for iid in self.tree.get_children()]

    def _row(self, iid: str) -> Entry:
        term, language, reading = tuple(self.tree.item(iid, "values"))
        code = next((k for k, v in LANGUAGE_LABELS.items() if v == language), ANY)
        return Entry(str(term), str(reading), code)

    def set_entries(self, entries: list[Entry]) -> None:
        self.tree.delete(*self.tree.get_children())
        for entry in entries:
            self._put(entry)

    def _put(self, entry: Entry) -> str:
        """Insert ``entry``, or replace the row with the same term and language; returns the row's id."""
        for iid in self.tree.get_children():
            old = self._row(iid)
            if (old.term.casefold(), old.language) == (entry.term.casefold(), entry.language):
                self.tree.item(iid, values=(entry.term, LANGUAGE_LABELS[entry.language], entry.reading))
                return iid
        return self.tree.insert("", "end", values=(entry.term, LANGUAGE_LABELS[entry.language], entry.reading))

    def _pick(self) -> None:
        selection = self.tree.selection()
        if selection:
            entry = self._row(selection[0])
            self.term.set(entry.term)
            self.reading.set(entry.reading)
            self.language.set(LANGUAGE_LABELS[entry.language])

    def add_entry(self) -> bool:
        code = next((k for k, v in LANGUAGE_LABELS.items() if v == self.language.get()), ANY)
        try:
            entry = Entry(self.term.get(), self.reading.get(), code).check()
        except DictionaryError as exc:
            self._report_error("Pronunciation dictionary", exc)
            return False
        iid = self._put(entry)
        self.tree.selection_set(iid)
        self.tree.see(iid)
        self.term.set("")
        self.reading.set("")
        self.changed = True
        self.term_entry.focus_set()
        return True

    def remove_selected(self) -> None:
        selection = self.tree.selection()
        if selection:
            self.tree.delete(*selection)
            self.changed = True

    # --- files ----------------------------------------------------------------------------------------------
    def save(self) -> bool:
        try:
            glossary = self.store.save(self.entries())
        except DictionaryError as exc:
            self._report_error("Pronunciation dictionary", exc)
            return False
        self.changed = False
        self._on_saved(glossary)
        return True

    def import_file(self) -> bool:
        """Add the entries of a glossary YAML file (an entry for a term already listed replaces it); not saved yet."""
        path = self._dialog("open_file", parent=self, title="Import a pronunciation dictionary", filetypes=FILETYPES)
        if not path:
            return False
        try:
            entries = read_file(Path(path))
        except DictionaryError as exc:
            self._report_error("Import", exc)
            return False
        for entry in entries:
            self._put(entry)
        self.changed = True
        return True

    def export_file(self) -> Path | None:
        path = self._dialog(
            "save_file", parent=self, title="Export the pronunciation dictionary", initialfile="pronunciation.yaml",
            defaultextension=".yaml", filetypes=FILETYPES,
        )
        if not path:
            return None
        try:
            write_file(Path(path), self.entries())
        except DictionaryError as exc:
            self._report_error("Export", exc)
            return None
        return Path(path)

    def close(self) -> None:
        if self.changed and self._dialog(
            "yesno", parent=self, title="Pronunciation dictionary", message="Save the changes to the dictionary?"
        ):
            if not self.save():
                return
        self.destroy()
