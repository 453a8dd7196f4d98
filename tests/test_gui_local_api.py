"""Tools → Local API in the running app (Xvfb): the real main window with the stand-in engine, the real speech
server on loopback (core.server) and the official ``openai`` client against it.

Started from the menu it serves the app's own engine; the URL and key are shown and copyable; the key rotates;
API jobs show in the status bar and the window's job list; an API job during a studio job waits its turn and
both equal their solo runs; stopping leaves no thread or port behind; a server that was on starts again with the
app.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf
from gui_helpers import Studio, close_studio, make_studio, wait_until, write_tone

from core.api import SynthesisRequest
from core.jobs import JobEvent
from desktop.standin import StandInEngine
from desktop.voice_library import VoiceLibrary

WAIT = 60.0
LONG = "The first sentence is here. Then a second one follows. A third one closes it. And one more."


def open_studio(home: Path, step: float = 0.02) -> Studio:
    s = make_studio(home, engine=StandInEngine(step_seconds=step))
    s.app.settings.local_api_port = 0  # any free port
    library = VoiceLibrary(s.app.dirs.voices)
    if library.find_by_name("Alice") is None:
        library.add_file("Alice", write_tone(home / "alice.wav", 1.5, freq=200.0))
    return s


@pytest.fixture
def studio(display, audio_server, tmp_path):
    s = open_studio(tmp_path / "home")
    yield s
    close_studio(s)


def start_from_menu(s: Studio):
    tools = s.app.commands.menus["Tools"]
    labels = [tools.entrycget(i, "label") if tools.type(i) == "command" else "" for i in range(tools.index("end") + 1)]
    tools.invoke(labels.index("Local API\u2026"))
    window = s.app.local_api.window
    assert window is not None and window.winfo_exists()
    assert window.toggle_button.cget("text") == "Start" and window.url.get() == ""
    window.toggle_button.invoke()
    wait_until(s.root, lambda: s.app.local_api.running and s.app.local_api.job is None, WAIT)
    s.root.update()
    return window


def client_for(s: Studio, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.app.local_api.url, api_key=key or s.app.local_api.key, max_retries=0,
                         timeout=WAIT)


def speak(client: openai.OpenAI, text: str = "Hello there.", **extra: object) -> bytes:
    return client.audio.speech.create(model="indextts2", voice="Alice", input=text, response_format="wav",
                                      extra_body=extra or None).content


def server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("indextts-api")]


def test_start_from_the_menu_speak_with_the_openai_client_and_stop(studio: Studio):
    s, app = studio, studio.app
    window = start_from_menu(s)
    control = app.local_api
    url, port = control.url, control.server.port
    assert url == f"http://127.0.0.1:{port}/v1" and window.url.get() == url
    assert window.state_text.get() == f"Running: {url}" and window.toggle_button.cget("text") == "Stop"
    key = window.key.get()
    assert key == control.key and len(key) > 20
    assert (app.dirs.config / "api_key").read_text().strip() == key
    assert str(window.entries["API key"].cget("show")) == "\u2022"  # masked until "Show key"
    buttons = [w for w in window.winfo_children()[0].winfo_children() if w.winfo_class() == "TButton"]
    copy_url = next(b for b in buttons if b.cget("text") == "Copy" and int(b.grid_info()["row"]) == 1)
    copy_url.invoke()
    assert s.root.clipboard_get() == url
    assert json.loads((app.dirs.config / "settings.json").read_text())["local_api"] is True

    calls_before = len(app.engine.calls)
    audio = speak(client_for(s))  # served by the app's own engine
    data, rate = sf.read(io.BytesIO(audio), dtype="int16")
    assert rate == 22050 and len(data) > 2000
    assert len(app.engine.calls) == calls_before + 1 and app.engine.calls[-1]["text"] == "Hello there."
    wait_until(s.root, lambda: "done" in app.status.get(), WAIT)
    assert app.status.get().startswith("API job ") and "\u201cHello there.\u201d" in app.status.get()
    rows = window.job_rows()
    assert len(rows) == 3 and all("\u201cHello there.\u201d" in r for r in rows)
    assert [w in r for w, r in zip(("waiting for its turn", "speaking", "done in"), rows, strict=True)] == [True] * 3
    assert any("local API: API job" in line for line in app.log_path.read_text().splitlines())

    window.toggle_button.invoke()  # Stop
    wait_until(s.root, lambda: control.job is None and not control.running, WAIT)
    assert window.state_text.get().startswith("Stopped") and window.url.get() == ""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert server_threads() == []
    assert json.loads((app.dirs.config / "settings.json").read_text())["local_api"] is False


def test_the_studios_stream_switches_do_not_reach_api_jobs(studio: Studio):
    """'Play while generating' + 'Stream inside segments' are the studio's: an API job streams inside its segments
    only when its own request says ``stream``."""
    s, app = studio, studio.app
    app.results.stream.set(True)
    app.results.stream_inside.set(True)
    start_from_menu(s)
    client = client_for(s)
    plain = sf.read(io.BytesIO(speak(client, "Whole segments.")), dtype="int16")[0]
    assert app.engine.calls[-1]["settings"]["stream"] is False and app.engine.calls[-1]["settings"]["num_beams"] == 3
    streamed = sf.read(io.BytesIO(speak(client, "Pieces of segments.", settings={"stream": True})), dtype="int16")[0]
    assert app.engine.calls[-1]["settings"]["stream"] is True
    assert len(plain) > 2000 and len(streamed) > 2000
    assert app.results.streams_inside  # the studio's switches are as the user left them


def test_rotating_the_key_refuses_the_old_one(studio: Studio):
    s, app = studio, studio.app
    window = start_from_menu(s)
    old = app.local_api.key
    assert speak(client_for(s, old))
    s.dialogs.answer("yesno", True)
    window.rotate()
    new = app.local_api.key
    assert new != old and window.key.get() == new and (app.dirs.config / "api_key").read_text().strip() == new
    with pytest.raises(openai.AuthenticationError):
        speak(client_for(s, old))
    assert speak(client_for(s, new))


def test_an_api_job_during_a_studio_job_waits_its_turn_and_both_equal_their_solo_runs(display, audio_server,
                                                                                     tmp_path: Path):
    s = open_studio(tmp_path / "home", step=0.05)
    app = s.app
    try:
        start_from_menu(s)
        events: list[tuple[str, str]] = []
        lock = threading.Lock()

        def record(event: JobEvent) -> None:
            if event.kind != "progress":
                with lock:
                    events.append((event.job.source, event.kind))

        app._engine_lock.gate.add_listener(record)
        client = client_for(s)
        api_solo = speak(client, "Short and sweet.", seed=7)

        app.text_panel.set_text(LONG)
        app.voice_panel.set_clip(s.voice)
        with lock:
            events.clear()
        job = app.generate()
        assert job is not None
        wait_until(s.root, lambda: ("gui", "started") in events, WAIT)
        box: dict[str, bytes] = {}
        api = threading.Thread(target=lambda: box.setdefault("api", speak(client, "Short and sweet.", seed=7)))
        api.start()
        wait_until(s.root, lambda: ("api", "queued") in events, WAIT)
        assert app.job is not None  # the studio job still runs; the API job waits
        wait_until(s.root, lambda: app.job is None and not api.is_alive(), WAIT)
        with lock:
            order = list(events)
        assert order.index(("gui", "finished")) < order.index(("api", "started")), order
        assert order[:2] == [("gui", "queued"), ("gui", "started")]
        assert box["api"] == api_solo
        entry = app.results.history[-1]
        request: SynthesisRequest = entry.request.synthesis
        solo = app.engine.synthesize(request)
        np.testing.assert_array_equal(entry.result.audio, solo.audio)
        wait_until(s.root, lambda: "API job" in app.status.get() and "done" in app.status.get(), WAIT)

        # the other way round: a studio job behind an API job says so, then runs
        with lock:
            events.clear()
        api = threading.Thread(target=lambda: box.__setitem__("long", speak(client, LONG, seed=3)))
        api.start()
        wait_until(s.root, lambda: ("api", "started") in events, WAIT)
        assert app.generate() is not None
        wait_until(s.root, lambda: app.stage.get() == "Waiting for its turn (an API job is running)\u2026", WAIT)
        wait_until(s.root, lambda: app.job is None and not api.is_alive(), WAIT)
        with lock:
            order = list(events)
        assert order.index(("api", "finished")) < order.index(("gui", "started")), order
        assert app.stage.get() == "Done" and len(box["long"]) > 1000
    finally:
        close_studio(s)


def test_a_server_that_was_on_starts_again_with_the_app(display, audio_server, tmp_path: Path):
    home = tmp_path / "home"
    s = open_studio(home)
    start_from_menu(s)
    s.app._save_settings()  # port 0 is saved too: the next start takes any free port again
    close_studio(s)  # closing stops the server but keeps 'on'
    assert server_threads() == []
    s = open_studio(home)
    try:
        wait_until(s.root, lambda: s.app.local_api.running, WAIT)
        assert speak(client_for(s))
        started = time.monotonic()
        s.app.local_api.stop()
        wait_until(s.root, lambda: not s.app.local_api.running and s.app.local_api.job is None, WAIT)
        assert time.monotonic() - started < 30
    finally:
        close_studio(s)
    assert server_threads() == []


def test_closing_the_window_while_the_server_starts_leaves_no_port(display, audio_server, tmp_path: Path):
    s = open_studio(tmp_path / "home")
    assert s.app.local_api.start() is not None
    close_studio(s)  # at once: the start is still under way in the worker
    assert server_threads() == []
