"""The widgets of the Projects view: the table of lines, the render bar and the log of failed lines.

:class:`LineTable` is a ``ttk.Treeview`` with one row per project line (iid = the line id). A whole project is
inserted in batches from ``after`` callbacks (:data:`FIRST_ROWS` at once, then :data:`BATCH_ROWS` per turn), so
a book of many thousand lines shows its first page at once and the window keeps answering while the rest comes
in; one changed line updates one row. Cells are edited in place (double-click the text or the speaker, Enter
saves, Esc cancels), rows are reordered by dragging, and the row values come from the view (``values(id)``).
"""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from tkinter import ttk

COLUMNS: tuple[tuple[str, str, int, bool], ...] = (  # name, heading, width, stretch
    ("n", "#", 56, False),
    ("speaker", "Speaker", 110, False),
    ("emotion", "Emotion", 120, False),
    ("text", "Text", 420, True),
    ("status", "Status", 80, False),
    ("duration", "Duration", 70, False),
    ("overrun", "Overrun", 70, False),
)
EDITABLE = ("text", "speaker")
FIRST_ROWS = 300
BATCH_ROWS = 400
DRAG_PIXELS = 6


@dataclass
class Edit:
    """A cell being edited in place."""

    line_id: str
    column: str
    widget: ttk.Entry | ttk.Combobox
    var: tk.StringVar


class LineTable(ttk.Frame):
    """The lines of a project. ``values(id)`` gives a row's cells and ``tags(id)`` its tags; ``on_edit(id,
    column, text)`` saves an edit; ``on_move(id, index)`` moves a dragged line; ``speakers()`` lists the names
    the speaker cell offers; ``cell_text(id, column)`` is the whole value an editor starts with; ``on_menu(event)``
    opens the context menu."""

    def __init__(self, parent: tk.Misc, *, values: Callable[[str], Sequence[str]],
                 tags: Callable[[str], tuple[str, ...]], on_edit: Callable[[str, str, str], bool],
                 on_move: Callable[[str, int], None], speakers: Callable[[], list[str]],
                 cell_text: Callable[[str, str], str], on_menu: Callable[[tk.Event], None] | None = None) -> None:
        super().__init__(parent)
        self._values, self._tags, self.cell_text = values, tags, cell_text
        self.on_edit, self.on_move, self.speakers = on_edit, on_move, speakers
        self.tree = ttk.Treeview(self, columns=[c[0] for c in COLUMNS], show="headings", selectmode="extended")
        for name, heading, width, stretch in COLUMNS:
            self.tree.heading(name, text=heading)
            self.tree.column(name, width=width, stretch=stretch, anchor="e" if name in ("n", "duration",
                                                                                         "overrun") else "w")
        self.tree.tag_configure("failed", foreground="#b91c1c")
        self.tree.tag_configure("overrun", foreground="#b45309")
        self.tree.tag_configure("chapter", font=("TkDefaultFont", 10, "bold"))
        self.tree.tag_configure("locked", foreground="#6b7280")
        scroll = ttk.Scrollbar(self, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.tree.pack(fill="both", expand=True)
        self.edit: Edit | None = None
        self._pending: list[str] = []
        self._after: str | None = None
        self._generation = 0
        self.filled_at: float | None = None  # when the last populate finished (perf_counter)
        self._drag: tuple[str, int] | None = None  # (line id pressed, y)
        self.dragging = False
        self.tree.bind("<Double-1>", self._begin_edit)
        self.tree.bind("<ButtonPress-1>", self._press, add="+")
        self.tree.bind("<B1-Motion>", self._motion, add="+")
        self.tree.bind("<ButtonRelease-1>", self._release, add="+")
        if on_menu is not None:
            self.tree.bind("<Button-3>", on_menu)

    # ------------------------------------------------------------------------------------------ rows

    def populate(self, ids: Sequence[str]) -> None:
        """Show exactly these lines in this order: the first rows now, the rest in batches."""
        self.cancel_edit()
        self._generation += 1
        if self._after is not None:
            self.after_cancel(self._after)
            self._after = None
        self.filled_at = None
        children = self.tree.get_children()
        if children:
            self.tree.delete(*children)
        self._pending = list(reversed(ids))  # popped from the end: the first line first
        self._insert_batch(FIRST_ROWS, self._generation)

    def _insert_batch(self, count: int, generation: int) -> None:
        self._after = None
        if generation != self._generation:
            return
        tree, pending = self.tree, self._pending
        for _ in range(min(count, len(pending))):
            line_id = pending.pop()
            tree.insert("", "end", iid=line_id, values=tuple(self._values(line_id)), tags=self._tags(line_id))
        if pending:
            self._after = self.after(1, self._insert_batch, BATCH_ROWS, generation)
        else:
            self.filled_at = time.perf_counter()

    @property
    def filling(self) -> bool:
        return bool(self._pending)

    def update_rows(self, ids: Sequence[str]) -> None:
        """Refresh the cells of these lines (rows not inserted yet get fresh values when they are); many rows are
        refreshed in batches like :meth:`populate`, so the window keeps answering."""
        pending = list(reversed(ids))
        self._refresh_batch(pending, FIRST_ROWS, self._generation)

    def _refresh_batch(self, pending: list[str], count: int, generation: int) -> None:
        if generation != self._generation:
            return  # the table was filled again meanwhile, with fresh values
        tree = self.tree
        for _ in range(min(count, len(pending))):
            line_id = pending.pop()
            if tree.exists(line_id):
                tree.item(line_id, values=tuple(self._values(line_id)), tags=self._tags(line_id))
        if pending:
            self.after(1, self._refresh_batch, pending, BATCH_ROWS, generation)

    def selected(self) -> list[str]:
        """The selected line ids in table order."""
        chosen = set(self.tree.selection())
        return [i for i in self.tree.get_children() if i in chosen] if len(chosen) > 1 else list(chosen)

    def select(self, ids: Sequence[str]) -> None:
        present = [i for i in ids if self.tree.exists(i)]
        self.tree.selection_set(present)
        if present:
            self.tree.focus(present[0])
            self.tree.see(present[0])

    def row_count(self) -> int:
        return len(self.tree.get_children())

    # ------------------------------------------------------------------------------------- inline edit

    def _begin_edit(self, event: tk.Event) -> str | None:
        line_id = self.tree.identify_row(event.y)
        column = self.tree.identify_column(event.x)
        if not line_id or not column:
            return None
        name = COLUMNS[int(column[1:]) - 1][0]
        if name in EDITABLE:
            self.begin_edit(line_id, name)
            return "break"
        return None

    def begin_edit(self, line_id: str, column: str) -> Edit | None:
        """Open an editor over the cell (``text`` or ``speaker``) of this line."""
        self.commit_edit()
        self.tree.see(line_id)
        self.update_idletasks()
        box = self.tree.bbox(line_id, column)
        if not box:
            return None
        x, y, w, h = box  # type: ignore[misc]
        var = tk.StringVar(self, value=self.cell_text(line_id, column))
        widget: ttk.Entry | ttk.Combobox
        if column == "speaker":
            widget = ttk.Combobox(self.tree, textvariable=var, values=self.speakers())
        else:
            widget = ttk.Entry(self.tree, textvariable=var)
        widget.place(x=x, y=y, width=max(w, 160), height=h)
        widget.focus_set()
        widget.select_range(0, "end")
        widget.bind("<Return>", self._key_commit)
        widget.bind("<KP_Enter>", self._key_commit)
        widget.bind("<Escape>", self._key_cancel)
        if column == "text":
            widget.bind("<FocusOut>", lambda _e: self.commit_edit())
        self.edit = Edit(line_id, column, widget, var)
        return self.edit

    def _key_commit(self, _event: tk.Event) -> str:
        self.commit_edit()
        return "break"

    def _key_cancel(self, _event: tk.Event) -> str:
        self.cancel_edit()
        return "break"

    def commit_edit(self) -> bool:
        """Save the open edit (if any); False when the view refused it (the editor stays open)."""
        edit = self.edit
        if edit is None:
            return True
        if not self.on_edit(edit.line_id, edit.column, edit.var.get()):
            return False
        self._close_editor()
        return True

    def cancel_edit(self) -> None:
        self._close_editor()

    def _close_editor(self) -> None:
        edit, self.edit = self.edit, None
        if edit is not None:
            edit.widget.destroy()
            self.tree.focus_set()

    # -------------------------------------------------------------------------------------------- drag

    def _press(self, event: tk.Event) -> None:
        line_id = self.tree.identify_row(event.y)
        self._drag = (line_id, event.y) if line_id else None
        self.dragging = False

    def _motion(self, event: tk.Event) -> None:
        if self._drag is None:
            return
        if not self.dragging and abs(event.y - self._drag[1]) >= DRAG_PIXELS:
            self.dragging = True
            self.tree.configure(cursor="sb_v_double_arrow")
        if self.dragging:
            target = self.tree.identify_row(event.y)
            if target:
                self.tree.see(target)

    def _release(self, event: tk.Event) -> None:
        drag, self._drag = self._drag, None
        if not self.dragging or drag is None:
            return
        self.dragging = False
        self.tree.configure(cursor="")
        target = self.tree.identify_row(event.y)
        if not target:
            children = self.tree.get_children()
            target = children[-1] if event.y > 0 and children else (children[0] if children else "")
        if target and target != drag[0]:
            self.on_move(drag[0], self.tree.index(target))


class RenderBar(ttk.Frame):
    """Progress of the whole project: bar, lines done, time left and RTF."""

    def __init__(self, parent: tk.Misc) -> None:
        super().__init__(parent)
        self.fraction = tk.DoubleVar(self, value=0.0)
        self.lines = tk.StringVar(self, value="")
        self.timing = tk.StringVar(self, value="")
        self.stage = tk.StringVar(self, value="")
        ttk.Progressbar(self, variable=self.fraction, maximum=100).pack(fill="x")
        row = ttk.Frame(self)
        row.pack(fill="x")
        ttk.Label(row, textvariable=self.lines).pack(side="left")
        ttk.Label(row, textvariable=self.stage).pack(side="left", padx=12)
        ttk.Label(row, textvariable=self.timing).pack(side="right")

    def show(self, done: int, total: int, fraction: float, stage: str, eta: float | None, rtf: float | None) -> None:
        self.fraction.set(max(0.0, min(1.0, fraction)) * 100)
        self.lines.set(f"{done} of {total} lines done" if total else "Nothing to render")
        self.stage.set(stage)
        parts = []
        if eta is not None and done < total:
            parts.append(f"about {_clock(eta)} left")
        if rtf is not None:
            parts.append(f"RTF {rtf:.2f}")
        self.timing.set(" \u00b7 ".join(parts))

    def clear(self) -> None:
        self.fraction.set(0.0)
        for var in (self.lines, self.timing, self.stage):
            var.set("")


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class FailureLog(ttk.LabelFrame):
    """The lines whose last render failed, with the error; double-click selects the line in the table."""

    def __init__(self, parent: tk.Misc, on_pick: Callable[[str], None]) -> None:
        super().__init__(parent, text="Failed lines", padding=4)
        self.tree = ttk.Treeview(self, columns=("line", "error"), show="headings", height=4)
        self.tree.heading("line", text="Line")
        self.tree.heading("error", text="Error")
        self.tree.column("line", width=60, stretch=False)
        self.tree.column("error", width=600, stretch=True)
        self.tree.pack(fill="both", expand=True)
        self.tree.bind("<Double-1>", lambda _e: self._pick(on_pick))

    def _pick(self, on_pick: Callable[[str], None]) -> None:
        focus = self.tree.focus()
        if focus:
            on_pick(focus)

    def set_failure(self, line_id: str, error: str | None) -> None:
        """Show (or, with no error, remove) the failure of one line."""
        if error:
            values = (line_id, " ".join(error.splitlines()))
            if self.tree.exists(line_id):
                self.tree.item(line_id, values=values)
            else:
                self.tree.insert("", "end", iid=line_id, values=values)
        elif self.tree.exists(line_id):
            self.tree.delete(line_id)

    def clear(self) -> None:
        children = self.tree.get_children()
        if children:
            self.tree.delete(*children)

    def entries(self) -> list[tuple[str, str]]:
        return [(str(v[0]), str(v[1])) for v in (self.tree.item(i, "values") for i in self.tree.get_children())]
