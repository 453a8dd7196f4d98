"""One table of the window's commands: each registration gives the menu item, its keyboard shortcuts and the
rule that says when it is enabled (the model is thonny's ``Workbench.add_command``).

The app's :class:`AppState` decides what is enabled: a command names the states it works in (and may add a
tester of its own); :meth:`CommandTable.refresh` applies that to the menu items and to every button attached
to a command, and a shortcut runs its command only while it is enabled. Adding a command is one call::

    table.add("local_api", "Local API\u2026", open_api, menu="Tools")
"""

from __future__ import annotations

import enum
import tkinter as tk
from collections.abc import Callable, Collection
from dataclasses import dataclass
from tkinter import ttk
from typing import Literal


class AppState(enum.Enum):
    """What the window is doing; the one input to what is enabled."""

    NO_MODELS = "no models"
    LOADING = "loading"
    READY = "ready"
    GENERATING = "generating"


ALWAYS: frozenset[AppState] = frozenset(AppState)

_MODIFIERS = {"ctrl": "Control", "alt": "Alt", "shift": "Shift", "cmd": "Command"}
_KEYS = {"enter": "Return", "esc": "Escape", "del": "Delete", "space": "space", "tab": "Tab"}


def key_sequence(shortcut: str) -> str:
    """The Tk event sequence of a shortcut as a menu shows it: ``Ctrl+Shift+S`` -> ``<Control-S>``.

    Tk reports a shifted letter as the upper-case keysym, so Shift on a letter becomes the capital letter.
    """
    *mods, key = shortcut.split("+")
    names = [_MODIFIERS[m.strip().lower()] for m in mods]
    key = key.strip()
    if len(key) == 1 and key.isalpha():
        if "Shift" in names:
            names.remove("Shift")
            key = key.upper()
        else:
            key = key.lower()
    else:
        key = _KEYS.get(key.lower(), key)
    return "<" + "-".join([*names, key]) + ">"


@dataclass(frozen=True)
class Command:
    name: str
    label: str
    handler: Callable[[], object]
    menu: str | None
    shortcuts: tuple[str, ...]
    enabled_in: frozenset[AppState]
    tester: Callable[[], bool] | None

    @property
    def accelerator(self) -> str:
        return self.shortcuts[0] if self.shortcuts else ""


class CommandTable:
    """The menu bar of ``root``, built from :meth:`add` calls; ``state`` says what the window is doing now."""

    def __init__(self, root: tk.Tk, state: Callable[[], AppState]) -> None:
        self.root = root
        self._state = state
        self.menubar = tk.Menu(root)
        root.configure(menu=self.menubar)
        self.menus: dict[str, tk.Menu] = {}
        self.commands: dict[str, Command] = {}
        self._entries: dict[str, tuple[tk.Menu, int]] = {}
        self._widgets: list[tuple[ttk.Button | tk.Button, str]] = []

    def menu(self, label: str) -> tk.Menu:
        """The drop-down menu ``label`` of the menu bar; menus appear in the order they are first used."""
        if label not in self.menus:
            self.menus[label] = tk.Menu(self.menubar, tearoff=False)
            self.menubar.add_cascade(label=label, menu=self.menus[label])
        return self.menus[label]

    def add(
        self,
        name: str,
        label: str,
        handler: Callable[[], object],
        *,
        menu: str | None = None,
        shortcuts: tuple[str, ...] | str = (),
        enabled_in: Collection[AppState] = ALWAYS,
        tester: Callable[[], bool] | None = None,
        separator_before: bool = False,
    ) -> Command:
        """Register a command: a menu item (when ``menu`` is given), its shortcuts and when it is enabled."""
        if name in self.commands:
            raise ValueError(f"the command {name!r} is registered twice")
        keys = (shortcuts,) if isinstance(shortcuts, str) else tuple(shortcuts)
        command = Command(name, label, handler, menu, keys, frozenset(enabled_in), tester)
        self.commands[name] = command
        if menu is not None:
            drop = self.menu(menu)
            if separator_before:
                drop.add_separator()
            drop.add_command(label=label, accelerator=command.accelerator, command=lambda: self.invoke(name))
            self._entries[name] = (drop, int(drop.index("end") or 0))
        for shortcut in keys:
            self.root.bind(key_sequence(shortcut), lambda _event: self.invoke(name), add="+")
        self._apply(name)
        return command

    def attach(self, button: ttk.Button | tk.Button, name: str) -> None:
        """``button`` runs the command ``name`` and is enabled exactly when the command is."""
        if name not in self.commands:
            raise KeyError(name)
        button.configure(command=lambda: self.invoke(name))
        self._widgets.append((button, name))
        self._apply(name)

    def enabled(self, name: str) -> bool:
        command = self.commands[name]
        if self._state() not in command.enabled_in:
            return False
        return command.tester() if command.tester is not None else True

    def invoke(self, name: str) -> object:
        """Run the command if it is enabled now (menu, shortcut or button); None otherwise."""
        return self.commands[name].handler() if self.enabled(name) else None

    def refresh(self) -> None:
        """Apply the current state to every menu item and attached button."""
        for name in self.commands:
            self._apply(name)

    def _apply(self, name: str) -> None:
        state: Literal["normal", "disabled"] = "normal" if self.enabled(name) else "disabled"
        if name in self._entries:
            drop, index = self._entries[name]
            drop.entryconfigure(index, state=state)
        for button, command in self._widgets:
            if command == name:
                button.configure(state=state)
