"""The command table (desktop.commands): one registration gives the menu item, its shortcuts and when it is
enabled; the main window's menus, shortcuts, Generate and Cancel all follow the one AppState through it."""

from __future__ import annotations

import tkinter as tk

import pytest
from gui_helpers import close_studio, make_studio, wait_until

from desktop.commands import AppState, CommandTable, key_sequence
from desktop.standin import StandInEngine


@pytest.fixture
def root(display):
    r = tk.Tk()
    yield r
    r.destroy()


def menu_labels(menu: tk.Menu) -> list[str]:
    end = menu.index("end")
    if end is None:
        return []
    return [str(menu.entrycget(i, "label")) for i in range(end + 1) if menu.type(i) not in ("separator", "tearoff")]


def entry_of(menu: tk.Menu, label: str) -> int:
    end = menu.index("end")
    assert end is not None
    for i in range(end + 1):
        if menu.type(i) not in ("separator", "tearoff") and menu.entrycget(i, "label") == label:
            return i
    raise AssertionError(f"{label!r} is not in the menu: {menu_labels(menu)}")


def press(root: tk.Tk, sequence: str) -> None:
    root.focus_force()
    root.update()
    root.event_generate(sequence)
    root.update()


def test_key_sequence_matches_what_tk_reports():
    assert key_sequence("Ctrl+S") == "<Control-s>"
    assert key_sequence("Ctrl+Shift+S") == "<Control-S>"  # Tk reports the shifted letter as its capital
    assert key_sequence("Ctrl+Enter") == "<Control-Return>"
    assert key_sequence("F5") == "<F5>"
    assert key_sequence("Esc") == "<Escape>"
    assert key_sequence("Ctrl+Alt+Del") == "<Control-Alt-Delete>"


def test_one_registration_gives_menu_item_shortcut_and_enabled_state(root):
    state = {"now": AppState.READY}
    allowed = {"tester": True}
    ran: list[str] = []
    table = CommandTable(root, lambda: state["now"])
    table.add("first", "First thing", lambda: ran.append("first"), menu="File")
    table.add(
        "go",
        "Go\u2026",
        lambda: ran.append("go"),
        menu="Tools",
        shortcuts=("Ctrl+Shift+G", "F7"),
        enabled_in={AppState.READY},
        tester=lambda: allowed["tester"],
        separator_before=True,
    )
    button = tk.Button(root, text="Go")
    table.attach(button, "go")

    # the menu bar: cascades in the order of first use, the item with its accelerator
    bar = table.menubar
    assert menu_labels(bar) == ["File", "Tools"]
    tools = table.menus["Tools"]
    assert menu_labels(tools) == ["Go\u2026"] and tools.type(0) == "separator"
    index = entry_of(tools, "Go\u2026")
    assert tools.entrycget(index, "accelerator") == "Ctrl+Shift+G"

    # the menu item, each shortcut and the button run it
    tools.invoke(index)
    press(root, "<Control-G>")
    press(root, "<F7>")
    button.invoke()
    assert ran == ["go"] * 4

    # disabled in the states it does not list, and when its tester says no: menu, shortcut and button alike
    for now, tester in ((AppState.GENERATING, True), (AppState.NO_MODELS, True), (AppState.READY, False)):
        state["now"], allowed["tester"] = now, tester
        table.refresh()
        assert not table.enabled("go")
        assert str(tools.entrycget(index, "state")) == "disabled" and str(button.cget("state")) == "disabled"
        press(root, "<Control-G>")
        assert table.invoke("go") is None
    assert ran == ["go"] * 4
    state["now"], allowed["tester"] = AppState.READY, True
    table.refresh()
    assert str(tools.entrycget(index, "state")) == "normal" and str(button.cget("state")) == "normal"
    press(root, "<F7>")
    assert ran == ["go"] * 5
    assert str(table.menus["File"].entrycget(0, "state")) == "normal"  # ALWAYS: every state

    with pytest.raises(ValueError, match="'go' is registered twice"):
        table.add("go", "Again", lambda: None)


def test_every_menu_item_of_the_window_is_a_registered_command(display, audio_server, tmp_path):
    s = make_studio(tmp_path / "home")
    try:
        table = s.app.commands
        bar = table.menubar
        cascades = menu_labels(bar)
        assert cascades == ["File", "Speech", "Project", "Presets", "Tools"]
        in_menus = {(c, label) for c in cascades for label in menu_labels(table.menus[c])}
        registered = {(cmd.menu, cmd.label) for cmd in table.commands.values()}
        assert in_menus == registered and len(in_menus) == 22
        assert ("Tools", "Pronunciation dictionary\u2026") in in_menus
        for cmd in table.commands.values():
            for shortcut in cmd.shortcuts:
                assert s.root.bind(key_sequence(shortcut)), f"{shortcut} is not bound"
        assert table.commands["generate"].shortcuts == ("Ctrl+Enter", "F5")
    finally:
        close_studio(s)


def test_generate_follows_the_app_state(display, audio_server, tmp_path):
    engine = StandInEngine(step_seconds=0.05)
    s = make_studio(tmp_path / "home", engine=engine, autoload=False)
    app, root = s.app, s.root
    speech = app.commands.menus["Speech"]
    generate, cancel = entry_of(speech, "Generate"), entry_of(speech, "Cancel")

    def enabled() -> tuple[bool, bool, bool, bool]:
        return (
            str(speech.entrycget(generate, "state")) == "normal",
            str(app.generate_button.cget("state")) == "normal",
            str(speech.entrycget(cancel, "state")) == "normal",
            str(app.cancel_button.cget("state")) == "normal",
        )

    try:
        app.text_panel.set_text("Hello there.")
        app.voice_panel.set_clip(s.voice)
        assert app.state is AppState.NO_MODELS and enabled() == (False, False, False, False)
        press(root, "<Control-Return>")
        press(root, "<F5>")
        assert app.job is None and engine.calls == []  # the shortcut does nothing while Generate is disabled

        app.load_engine()
        assert app.state is AppState.LOADING and enabled() == (False, False, False, False)
        wait_until(root, lambda: app.load_job is None)
        assert app.state is AppState.READY and enabled() == (True, True, False, False)

        press(root, "<F5>")
        assert app.job is not None and app.state is AppState.GENERATING
        assert enabled() == (False, False, True, True)
        job = app.job
        press(root, "<Control-Return>")  # disabled while generating: no second job
        assert app.job is job
        press(root, "<Escape>")  # Cancel is enabled now
        wait_until(root, lambda: app.job is None)
        assert app.stage.get() == "Cancelled" and app.results.history == []
        assert app.state is AppState.READY and enabled() == (True, True, False, False)

        speech.invoke(generate)  # the menu item starts it as the button does
        wait_until(root, lambda: app.job is None)
        assert len(app.results.history) == 1 and engine.calls[-1]["text"] == "Hello there."
    finally:
        close_studio(s)


def test_a_new_menu_command_is_one_line(studio):
    app = studio.app
    opened: list[str] = []
    app.commands.add("example_tool", "Example tool\u2026", lambda: opened.append("tool"), menu="Tools")
    tools = app.commands.menus["Tools"]
    assert menu_labels(tools)[-1] == "Example tool\u2026"
    tools.invoke(entry_of(tools, "Example tool\u2026"))
    assert opened == ["tool"]


def test_play_is_enabled_once_there_is_a_result(studio):
    app = studio.app
    speech = app.commands.menus["Speech"]
    play = entry_of(speech, "Play / pause result")
    assert str(speech.entrycget(play, "state")) == "disabled"
    app.text_panel.set_text("Hi.")
    app.voice_panel.set_clip(studio.voice)
    studio.generate_and_wait()
    assert app.results.current is not None and str(speech.entrycget(play, "state")) == "normal"
