"""A loopback HTTP server that answers like the HuggingFace hub's resolve endpoint (HEAD + ranged GET).

Serves ``files[(repo, path)] = bytes``. Fault injection: ``fail_next[(repo, path)]`` = list of
"500" (server error), "drop" (close the connection half-way through the body), "corrupt" (serve wrong bytes).
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.fail_next: dict[tuple[str, str], list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.slow: dict[tuple[str, str], threading.Event] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _lookup(self):
                m = re.match(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", self.path)
                if not m:
                    return None, None
                key = (m["repo"], m["path"])
                return key, server.files.get(key)

            def _headers(self, data: bytes, status: int = 200, length: int | None = None, extra=None):
                self.send_response(status)
                sha = hashlib.sha256(data).hexdigest()
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) if length is None else length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()

            def _error(self, code: int):
                body = b'{"error": "nope"}'
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Error-Code", "EntryNotFound" if code == 404 else "ServerError")
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has no body (it would corrupt a kept-alive connection)
                    self.wfile.write(body)

            def do_HEAD(self):
                key, data = self._lookup()
                server.requests.append(("HEAD", self.path, None))
                if data is None:
                    return self._error(404)
                faults = server.fail_next.get(key) or []
                if faults and faults[0] == "500":
                    faults.pop(0)
                    return self._error(500)
                self._headers(data)

            def do_GET(self):
                key, data = self._lookup()
                rng = self.headers.get("Range")
                server.requests.append(("GET", self.path, rng))
                if data is None:
                    return self._error(404)
                faults = server.fail_next.get(key) or []
                fault = faults.pop(0) if faults else None
                if fault == "500":
                    return self._error(500)
                payload = data
                if fault == "corrupt":
                    payload = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
                start = 0
                if rng:
                    m = re.match(r"bytes=(\d+)-(\d*)", rng)
                    if m:
                        start = int(m[1])
                body = payload[start:]
                if start:
                    self._headers(data, 206, len(body), {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                else:
                    self._headers(data, 200, len(body))
                gate = server.slow.get(key)
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                chunk = 8192
                for i in range(0, len(body), chunk):
                    if gate is not None and i >= self.server.hold_after:
                        gate.wait(10)  # hold the transfer mid-file until the test releases it
                    try:
                        self.wfile.write(body[i : i + chunk])
                    except (BrokenPipeError, ConnectionResetError):
                        return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.hold_after = 12 << 20  # past huggingface_hub's first read chunk (10 MiB), so progress is seen
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
