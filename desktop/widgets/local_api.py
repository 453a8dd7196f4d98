"""Tools → Local API: the OpenAI-compatible speech server (:mod:`core.server`) inside the running app.

:class:`LocalApiControl` starts and stops a :class:`core.server.runner.LocalServer` over the app's own engine
(the models already loaded, never a second copy) and the app's engine queue (:class:`desktop.engine_turns.
EngineTurns`), so studio, project and API jobs run one at a time in the order they came. Starting and stopping
run in the worker (the window never waits on a socket). API jobs appear in the status bar, in the app log and
in the window's job list; a studio job queued behind another job says so in the studio's stage line. Whether
the server was on is remembered in the settings (``local_api``) and it starts again with the app.
:class:`LocalApiWindow` shows the URL and the key (both copyable) and rotates the key.
"""

from __future__ import annotations

import logging
import time
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk
from typing import TYPE_CHECKING

from core.api import Cancelled
from core.jobs import JobEvent
from core.server.keys import ensure_key, key_path, load_key, rotate_key
from core.server.runner import DEFAULT_HOST, LocalServer
from core.voices import VoiceCatalog
from desktop.mailbox import Mailbox
from desktop.worker import Job

if TYPE_CHECKING:
    from desktop.app import StudioApp

log = logging.getLogger(__name__)

MAX_LOG_ROWS = 200


def describe(event: JobEvent) -> str:
    """One line for the status bar and the job list: ``API job 3: started — "Hello there"``."""
    job = event.job
    words = {"queued": "waiting for its turn", "started": "speaking", "finished": "done", "failed": "failed",
             "cancelled": "cancelled", "progress": "speaking"}[event.kind]
    took = ""
    if event.kind == "finished" and job.started_at is not None and job.finished_at is not None:
        took = f" in {job.finished_at - job.started_at:.1f} s"
    error = f": {event.error}" if event.kind == "failed" and event.error else ""
    return f"API job {job.id}: {words}{took}{error} \u2014 \u201c{job.label}\u201d"


class LocalApiControl:
    """The server of one window; ``register(add)`` puts Tools → Local API… into the command table."""

    def __init__(self, app: StudioApp) -> None:
        self.app = app
        self.server: LocalServer | None = None
        self.key_file = key_path(app.dirs.config)
        self.key = ""
        self.job: Job | None = None  # a start or stop in progress
        self.error = ""
        self.window: LocalApiWindow | None = None
        self.log: list[str] = []  # the API jobs seen, newest last
        self._listeners: list[Callable[[], None]] = []
        self.events: Mailbox[JobEvent] = Mailbox(app.root, self._on_events, poll_ms=100)
        self._unsubscribe = app._engine_lock.gate.add_listener(self._on_event)
        self._starting: LocalServer | None = None  # a server whose start runs in the worker
        if app.settings.local_api and app.persist:  # not in a selftest: that must not open a port
            app.root.after_idle(self.start)

    def register(self, add: Callable[..., object]) -> None:
        add("local_api", "Local API\u2026", self.open_window, menu="Tools", separator_before=True)

    # ------------------------------------------------------------------------------------------- state

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _remember(self, on: bool) -> None:
        if self.app.settings.local_api != on:
            self.app.settings.local_api = on
            self.app._save_settings()

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Job | None:
        """Start serving (in the worker); the URL is shown once it listens."""
        if self.running or self.job is not None:
            return None
        try:
            self.key = ensure_key(self.key_file)
        except Exception as exc:  # EngineError: the config folder cannot hold the key
            self.app.error("Local API", exc)
            return None
        server = LocalServer(self.app.engine, voices=VoiceCatalog(self.app.dirs.voices), key=lambda: self.key,
                             host=DEFAULT_HOST, port=int(self.app.settings.local_api_port),
                             gate=self.app._engine_lock.gate)
        self.error, self._starting = "", server

        def done(url: str) -> None:
            self.job, self.server, self._starting = None, server, None
            self._remember(True)
            self.app.status.set(f"Local API listening on {url}")
            self._changed()

        def failed(exc: BaseException) -> None:
            self.job, self._starting = None, None
            self.error = str(exc)
            self._changed()
            self.app.error("Local API", exc, prefix="The local API could not start. ")

        def work(job: Job, post: Callable[[str, object], None]) -> str:
            url = server.start()
            if job.cancel.is_set():  # the window closed meanwhile: no port may stay open
                server.stop()
                raise Cancelled()
            return url

        self.job = self.app.worker.start("local-api-start", work, done, failed)
        self._changed()
        return self.job

    def stop(self) -> Job | None:
        """Stop serving (in the worker): running API jobs are cancelled, the port is closed."""
        server = self.server
        if server is None or self.job is not None:
            return None

        def done(_: object) -> None:
            self.job, self.server = None, None
            self._remember(False)
            self.app.status.set("Local API stopped.")
            self._changed()

        def failed(exc: BaseException) -> None:
            self.job = None
            self._changed()
            self.app.error("Local API", exc)

        self.job = self.app.worker.start("local-api-stop", lambda job, post: server.stop(), done, failed)
        self._changed()
        return self.job

    def toggle(self) -> None:
        if self.running:
            self.stop()
        else:
            self.start()

    def rotate(self) -> str | None:
        """A new key from now on (clients with the old one get 401)."""
        try:
            self.key = rotate_key(self.key_file)
        except Exception as exc:  # EngineError: the key file cannot be written
            self.app.error("Local API", exc)
            return None
        self.app.status.set("A new API key is in use; give it to your other apps.")
        self._changed()
        return self.key

    def close(self) -> None:
        """The window closes: stop the server here and now (the setting keeps whether it was on)."""
        self.events.close()
        self._unsubscribe()
        if self.job is not None:
            self.job.cancel.set()
        for server in {id(s): s for s in (self.server, self._starting) if s is not None}.values():
            server.stop(timeout=10.0)  # a start still running finishes first, then stops
        self.server = self._starting = None

    # ------------------------------------------------------------------------------------------ API jobs

    def _on_event(self, event: JobEvent) -> None:  # a job's thread
        if event.kind != "progress" and (event.job.source == "api" or event.kind == "queued"):
            self.events.post(event)

    def _on_events(self, events: list[JobEvent]) -> None:  # the Tk thread
        gate = self.app._engine_lock.gate.status()
        running = gate.running
        if running is not None and any(e.job.source == "gui" and e.job in gate.waiting for e in events):
            other = "an API job" if running.source == "api" else f"a {running.source} job"
            self.app.stage.set(f"Waiting for its turn ({other} is running)\u2026")
        events = [e for e in events if e.job.source == "api"]
        if not events:
            return
        for event in events:
            line = f"{time.strftime('%H:%M:%S')}  {describe(event)}"
            log.info("local API: %s", describe(event))
            self.log.append(line)
        del self.log[:-MAX_LOG_ROWS]
        waiting = len([j for j in self.app._engine_lock.gate.status().waiting if j.source == "api"])
        more = f" ({waiting} more waiting)" if waiting else ""
        self.app.status.set(describe(events[-1]) + more)
        if self.window is not None and self.window.winfo_exists():
            self.window.show_log()

    def open_window(self) -> LocalApiWindow:
        if self.window is not None and self.window.winfo_exists():
            self.window.lift()
            return self.window
        self.window = LocalApiWindow(self.app.root, self)
        return self.window


class LocalApiWindow(tk.Toplevel):
    """Start/stop, the URL and the key (copyable), rotate, the port and the API jobs seen."""

    def __init__(self, parent: tk.Misc, control: LocalApiControl) -> None:
        super().__init__(parent)
        self.control = control
        self.title("Local API")
        self.transient(parent.winfo_toplevel())
        self.state_text = tk.StringVar(self)
        self.url = tk.StringVar(self)
        self.key = tk.StringVar(self)
        self.show_key = tk.BooleanVar(self, value=False)
        self.port = tk.StringVar(self, value=str(control.app.settings.local_api_port))
        body = ttk.Frame(self, padding=12)
        body.pack(fill="both", expand=True)
        body.columnconfigure(1, weight=1)
        ttk.Label(body, textvariable=self.state_text).grid(row=0, column=0, columnspan=3, sticky="w")
        self.toggle_button = ttk.Button(body, command=control.toggle)
        self.toggle_button.grid(row=0, column=3, sticky="e")
        rows: list[tuple[str, tk.StringVar, Callable[[], None]]] = [
            ("URL", self.url, lambda: self.copy(self.url.get())),
            ("API key", self.key, lambda: self.copy(self.key.get())),
        ]
        self.entries: dict[str, ttk.Entry] = {}
        for r, (label, var, copy) in enumerate(rows, start=1):
            ttk.Label(body, text=label).grid(row=r, column=0, sticky="w", pady=3)
            entry = ttk.Entry(body, textvariable=var, state="readonly", width=56)
            entry.grid(row=r, column=1, columnspan=2, sticky="ew", padx=6)
            ttk.Button(body, text="Copy", command=copy).grid(row=r, column=3, sticky="e")
            self.entries[label] = entry
        self.entries["API key"].configure(show="\u2022")
        keys = ttk.Frame(body)
        keys.grid(row=3, column=1, columnspan=3, sticky="w", padx=6)
        ttk.Checkbutton(keys, text="Show key", variable=self.show_key, command=self._show_key).pack(side="left")
        ttk.Button(keys, text="Rotate key\u2026", command=self.rotate).pack(side="left", padx=8)
        ttk.Label(body, text="Port").grid(row=4, column=0, sticky="w", pady=3)
        port = ttk.Spinbox(body, from_=0, to=65535, textvariable=self.port, width=8, command=self._port_changed)
        port.grid(row=4, column=1, sticky="w", padx=6)
        port.bind("<FocusOut>", lambda _e: self._port_changed())
        ttk.Label(body, text="Listens on this computer only (127.0.0.1). Other apps use the URL as their "
                             "OpenAI base URL and the key as their API key.", wraplength=520,
                  style="Muted.TLabel").grid(row=5, column=0, columnspan=4, sticky="w", pady=(6, 6))
        ttk.Label(body, text="API jobs").grid(row=6, column=0, sticky="nw")
        self.jobs = ttk.Treeview(body, show="tree", height=8, selectmode="browse")
        self.jobs.column("#0", width=640, stretch=True)
        self.jobs.grid(row=7, column=0, columnspan=4, sticky="nsew")
        body.rowconfigure(7, weight=1)
        self.bind("<Escape>", lambda _e: self.destroy())
        control.on_change(self.refresh)
        self.refresh()
        self.show_log()

    def refresh(self) -> None:
        if not self.winfo_exists():
            return
        c = self.control
        if c.job is not None:
            self.state_text.set("Starting\u2026" if c.server is None else "Stopping\u2026")
        elif c.running:
            self.state_text.set(f"Running: {c.url}")
        else:
            self.state_text.set("Stopped." + (f" Last error: {c.error}" if c.error else ""))
        self.toggle_button.configure(text="Stop" if c.running else "Start",
                                     state="disabled" if c.job is not None else "normal")
        self.url.set(c.url or "")
        self.key.set(c.key or _stored_key(c))

    def show_log(self) -> None:
        rows = self.jobs.get_children()
        if rows:
            self.jobs.delete(*rows)
        for line in self.control.log:
            last = self.jobs.insert("", "end", text=line)
        if self.control.log:
            self.jobs.see(last)

    def job_rows(self) -> list[str]:
        return [str(self.jobs.item(i, "text")) for i in self.jobs.get_children()]

    def copy(self, text: str) -> None:
        if text:
            self.clipboard_clear()
            self.clipboard_append(text)
            self.control.app.status.set("Copied to the clipboard.")

    def rotate(self) -> None:
        ok = self.control.app.dialog("yesno", parent=self, title="Rotate the API key",
                                     message="Make a new API key? Apps using the current key stop working until "
                                             "they are given the new one.")
        if ok:
            self.control.rotate()

    def _show_key(self) -> None:
        self.entries["API key"].configure(show="" if self.show_key.get() else "\u2022")

    def _port_changed(self) -> None:
        settings = self.control.app.settings
        try:
            port = int(self.port.get())
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            self.port.set(str(settings.local_api_port))
            return
        if port != settings.local_api_port:
            settings.local_api_port = port  # used at the next start
            self.control.app._save_settings()


def _stored_key(control: LocalApiControl) -> str:
    """The key that will be used (read without creating one: the key is made on the first start)."""
    try:
        return load_key(control.key_file) or ""
    except Exception:  # noqa: BLE001 - shown as empty; starting reports the problem
        return ""
