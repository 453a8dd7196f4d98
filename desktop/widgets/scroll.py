"""A vertically scrolling frame: content taller than its place scrolls (wheel or scrollbar) instead of being cut.

Put widgets into :attr:`ScrollFrame.body`. The scrollbar shows only when the content is taller than the view;
:meth:`ScrollFrame.show` scrolls a widget inside the body into view (keyboard focus does it too).
"""

from __future__ import annotations

import tkinter as tk
from tkinter import ttk

from desktop.theme import THEME_EVENT, palette


class ScrollFrame(ttk.Frame):
    def __init__(self, parent: tk.Misc) -> None:
        super().__init__(parent)
        self.canvas = tk.Canvas(self, highlightthickness=0, borderwidth=0, width=0,
                                background=palette(parent).bg)
        self.canvas.themed = True  # type: ignore[attr-defined]  # recoloured below, not by the generic pass
        self.bar = ttk.Scrollbar(self, orient="vertical", command=self.canvas.yview)
        self.canvas.configure(yscrollcommand=self._bar_set)
        self.body = ttk.Frame(self.canvas)
        self._window = self.canvas.create_window(0, 0, window=self.body, anchor="nw")
        self.canvas.pack(side="left", fill="both", expand=True)
        self.body.bind("<Configure>", lambda e: self._resize())
        self.canvas.bind("<Configure>", lambda e: self._resize())
        self.bind(THEME_EVENT, lambda e: self.canvas.configure(background=palette(self).bg), add="+")
        for sequence in ("<MouseWheel>", "<Button-4>", "<Button-5>"):
            self.bind_all(sequence, self._wheel, add="+")
        self.bind_all("<FocusIn>", self._focus, add="+")

    def _resize(self) -> None:
        needed = self.body.winfo_reqheight()
        self.canvas.itemconfigure(self._window, width=self.canvas.winfo_width())
        self.canvas.configure(scrollregion=(0, 0, self.body.winfo_reqwidth(), needed))
        if int(self.canvas.cget("width")) != self.body.winfo_reqwidth():  # as wide as the content asks
            self.canvas.configure(width=self.body.winfo_reqwidth())

    def _bar_set(self, first: float | str, last: float | str) -> None:
        self.bar.set(first, last)
        if float(first) <= 0.0 and float(last) >= 1.0:
            self.bar.pack_forget()
        elif not self.bar.winfo_ismapped():
            self.bar.pack(side="right", fill="y", before=self.canvas)

    @property
    def scrolls(self) -> bool:
        return self.body.winfo_reqheight() > self.canvas.winfo_height()

    def _inside(self, widget: tk.Misc | None) -> bool:
        while widget is not None:
            if widget is self.body:
                return True
            widget = widget.master
        return False

    def _wheel(self, event: tk.Event) -> None:
        try:
            under = self.winfo_containing(event.x_root, event.y_root)
        except (KeyError, tk.TclError):  # over a window that is being destroyed, or a menu
            return
        if not self.scrolls or not (self._inside(under) or under is self.canvas):
            return
        step = -1 if getattr(event, "num", 0) == 4 or getattr(event, "delta", 0) > 0 else 1
        self.canvas.yview_scroll(step * 3, "units")

    def _focus(self, event: tk.Event) -> None:
        widget = event.widget
        if isinstance(widget, tk.Misc) and self._inside(widget):
            self.show(widget)

    def show(self, widget: tk.Misc) -> None:
        """Scroll so that ``widget`` (inside :attr:`body`) is in view."""
        if not self.scrolls:
            return
        self.update_idletasks()
        top = widget.winfo_rooty() - self.body.winfo_rooty()
        bottom = top + widget.winfo_height()
        view = self.canvas.winfo_height()
        total = max(1, self.body.winfo_reqheight())
        shown = float(self.canvas.yview()[0]) * total
        if top < shown:
            self.canvas.yview_moveto(top / total)
        elif bottom > shown + view:
            self.canvas.yview_moveto((bottom - view) / total)
