"""``LocalServer``: the speech server on a background thread, started and stopped from any thread.

    server = LocalServer(engine, voices=VoiceCatalog(library_folder()), key=ensure_key())
    server.start()          # binds (port 0: any free port), serves; EngineError when it cannot
    server.url              # "http://127.0.0.1:8020/v1"
    server.stop()           # cancels API jobs, closes the port, joins every thread it started

Loopback addresses only, unless ``allow_remote=True`` (then a warning is logged): the server is never open to
the network by accident. ``status()`` and the ``listener`` of the job gate give a window what it needs to show.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api import EngineError, EngineProtocol
from ..jobs import JobGate
from ..voices import VoiceCatalog
from .app import ServerLimits

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8020


class ServerError(EngineError):
    """The server cannot start (address refused, port taken, ...)."""


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1, "localhost")."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; warn when it is allowed."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ServerError(f"Refusing to listen on {host}: only this computer (127.0.0.1) is allowed by default. "
                          "Pass --allow-remote to let other machines on the network reach the speech server.")
    log.warning("the speech server listens on %s: other machines that can reach this address may use it "
                "(with the API key)", host)


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    url: str | None
    host: str
    port: int | None
    waiting: int
    busy: bool


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every response
    # written in two parts (headers, body) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # posix, not Windows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        what = "is already in use" if exc.errno in (98, 48, 10048) else f"cannot be used ({exc.strerror or exc})"
        raise ServerError(f"Port {port} on {host} {what}; choose another port (--port).") from None
    return sock


class LocalServer:
    """One server over one engine. ``start``/``stop`` are idempotent and safe to call from any thread."""

    def __init__(self, engine: EngineProtocol, *, voices: VoiceCatalog, key: str | Callable[[], str],
                 host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_remote: bool = False,
                 limits: ServerLimits | None = None, gate: JobGate | None = None) -> None:
        self.engine, self.voices, self.host, self.allow_remote = engine, voices, host, allow_remote
        self.requested_port = port
        self.limits = limits or ServerLimits()
        self.gate = gate or JobGate(self.limits.max_waiting)
        self._key = key
        self._lock = threading.Lock()
        self._server: Any = None  # uvicorn.Server (imported on start)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._app: Any = None  # the FastAPI app while running
        self._error: BaseException | None = None

    # ------------------------------------------------------------------------------------------- state

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int | None:
        return self._socket.getsockname()[1] if self._socket is not None else None

    @property
    def base_url(self) -> str | None:
        """``http://host:port`` while running."""
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str | None:
        """The OpenAI-compatible base URL clients are given (``.../v1``)."""
        return f"{self.base_url}/v1" if self.base_url else None

    def set_key(self, key: str | Callable[[], str]) -> None:
        """Use another key from the next request on (after ``rotate_key``)."""
        self._key = key
        if self._app is not None:
            self._app.state.service.key = key

    def status(self) -> ServerStatus:
        gate = self.gate.status()
        return ServerStatus(self.running, self.url, self.host, self.port, len(gate.waiting), gate.running is not None)

    # ---------------------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 15.0) -> str:
        """Bind and serve on a background thread; the URL. ServerError when the address cannot be used."""
        import uvicorn

        from .app import create_app

        with self._lock:
            if self.running:
                assert self.url is not None
                return self.url
            check_bind(self.host, self.allow_remote)
            sock = _bind(self.host, self.requested_port)
            app = create_app(self.engine, self.voices, self._key, self.limits, self.gate)
            config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none",
                                    timeout_graceful_shutdown=5, timeout_keep_alive=5)
            server = uvicorn.Server(config)
            self._socket, self._app, self._server, self._error = sock, app, server, None
            thread = threading.Thread(target=self._serve, args=(server, sock), name="indextts-api-server",
                                      daemon=True)
            self._thread = thread
            thread.start()
            deadline = time.monotonic() + timeout
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not server.started:
                self._teardown()
                raise ServerError(f"The speech server did not start on {self.host}:{self.requested_port}"
                                  + (f": {self._error}" if self._error else "."))
        log.info("speech server listening on %s", self.url)
        assert self.url is not None
        return self.url

    def _serve(self, server: Any, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start() / logged
            self._error = exc
            log.exception("the speech server stopped with an error")

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the API jobs, stop serving, close the port and join every thread; no-op when stopped."""
        with self._lock:
            if self._thread is None:
                return
            self._teardown(timeout)
        log.info("speech server stopped")

    def _teardown(self, timeout: float = 30.0) -> None:
        if self._app is not None:
            if self._app.state.service.stop_jobs(timeout) is not None:
                log.error("the API job thread did not stop within %.0f s", timeout)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the speech server thread did not stop within %.0f s", timeout)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._server = self._app = self._socket = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
