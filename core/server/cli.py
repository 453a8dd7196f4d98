"""``python main.py serve``: the speech server alone, over its own engine (the GUI runs it over the studio's)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from ..api import EngineError
from ..jobs import JobEvent
from .runner import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``serve`` on ``core.cli``'s sub-parsers."""
    p = subparsers.add_parser("serve", help="run the OpenAI-compatible local speech server")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this "
                                                         "computer only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow an address other machines can reach (needed for any --host beyond loopback)")
    p.add_argument("--model-dir", help="model folder")
    p.add_argument("--cache-dir", help="voice cache folder (default: the user cache folder)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu or mps")
    p.add_argument("--voices", action="append", default=[], metavar="DIR",
                   help="a folder whose audio files are voices too, named by file stem (repeatable)")
    p.add_argument("--api-key", help="the key clients must send (default: $INDEXTTS_API_KEY, else the stored key, "
                                     "generated on first start)")
    p.add_argument("--max-waiting", type=int, default=4, help="jobs that may wait for the engine (429 beyond)")
    return p


def _log_job(event: JobEvent) -> None:
    """One log line per finished, failed or cancelled job (the terminal shows what the server does)."""
    job = event.job
    if event.kind in ("finished", "failed", "cancelled"):
        took = (job.finished_at or 0.0) - (job.started_at or job.queued_at)
        detail = f": {event.error}" if event.error else ""
        log.info("job %d %s in %.2f s (%r)%s", job.id, event.kind, took, job.label, detail)


def run(args: argparse.Namespace) -> int:
    """Start the server, serve until Ctrl+C or SIGTERM, stop cleanly. EngineError for anything the user can fix."""
    from ..dirs import library_folder, user_folder
    from ..voices import VoiceCatalog
    from .app import ServerLimits
    from .keys import resolve_key
    from .runner import LocalServer, check_bind

    logging.getLogger("core.server").setLevel(logging.INFO)
    if not 0 <= args.port <= 65535:
        raise EngineError(f"--port {args.port} is not a port number (0 to 65535).")
    if args.max_waiting < 0:
        raise EngineError(f"--max-waiting {args.max_waiting} must be 0 or more.")
    check_bind(args.host, args.allow_remote)  # before the models load: refuse at once
    folders = [Path(d) for d in args.voices]
    for folder in folders:
        if not folder.is_dir():
            raise EngineError(f"--voices {folder}: no such folder.")
    key, key_from = resolve_key(args.api_key)
    voices = VoiceCatalog(library_folder(), folders)

    from .. import models
    from ..engine import Engine

    cache_dir = Path(args.cache_dir) if args.cache_dir else user_folder("cache") / "voices"
    engine = Engine(cache_dir=cache_dir)
    print("Loading the models ...", flush=True)
    engine.load(models.locate_model_dir(args.model_dir), device=args.device)
    server = LocalServer(engine, voices=voices, key=key, host=args.host, port=args.port,
                         allow_remote=args.allow_remote, limits=ServerLimits(max_waiting=args.max_waiting))
    server.gate.add_listener(_log_job)
    url = server.start()
    print(f"IndexTTS2 speech server: {url}  (OpenAI-compatible; POST {url}/audio/speech)")
    if key_from.startswith(("--", "$")):
        print(f"API key: from {key_from}")
    else:
        print(f"API key: {key}  (stored in {key_from})")
    print(f"Voices: {len(voices.entries())}  (GET {url}/audio/voices).  Stop with Ctrl+C.", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    print("stopped")
    return 0
