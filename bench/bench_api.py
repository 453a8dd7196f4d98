"""The local speech server's own cost: a request's time over the engine's own time, on the tiny models, and
requests per second for a short text.

A live :class:`core.server.runner.LocalServer` on loopback over the tiny engine (``tests/tiny_models.py``); the
requests come from one keep-alive ``httpx`` client (the ``openai`` client's transport). For each request the
job gate reports when the engine job started and finished, so the overhead is measured per request:
HTTP round trip minus the job's own time (parsing, checking, queueing, the hand-over to the job thread,
encoding, HTTP). The engine alone (``Engine.synthesize`` with the same request) is timed too.

Target: overhead under 20 ms per request.

    python bench/bench_api.py [--requests 30] [--format pcm|wav|mp3|flac|opus] [--clients 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import httpx  # noqa: E402
from tiny_models import tiny_model_dir, write_clip  # noqa: E402

from core.api import GenerationSettings, SynthesisRequest  # noqa: E402
from core.engine import Engine  # noqa: E402
from core.jobs import JobEvent, JobGate  # noqa: E402
from core.server.runner import LocalServer  # noqa: E402
from core.voices import VoiceCatalog  # noqa: E402

KEY = "bench-key-0123456789abcdef"
TEXT = "Hello there, this is a short sentence."
FAST = {"do_sample": False, "num_beams": 1, "max_mel_tokens": 8, "diffusion_steps": 2, "seed": 0}


class JobClock:
    """Seconds from 'started' to 'finished' of every gate job, in order."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.durations: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        now = time.perf_counter()
        with self.lock:
            if event.kind == "started":
                self.started[event.job.id] = now
            elif event.kind == "finished":
                self.durations.append(now - self.started.pop(event.job.id))


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"median {statistics.median(values) * 1000:7.2f} ms  p90 {p90 * 1000:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--format", default="pcm", choices=("pcm", "wav", "mp3", "flac", "opus"))
    ap.add_argument("--clients", type=int, default=4, help="parallel clients for the throughput run")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    write_clip(work / "voice.wav", 1.2, 180.0, seed=1)
    engine = Engine(cache_dir=work / "cache")
    engine.load(tiny_model_dir(), device="cpu")
    request = SynthesisRequest(TEXT, work / "voice.wav", settings=GenerationSettings(**FAST))
    engine.synthesize(request)  # warm: voice conditioning cached, first-call costs paid

    alone = []
    for _ in range(a.requests):
        t = time.perf_counter()
        engine.synthesize(request)
        alone.append(time.perf_counter() - t)

    gate, clock = JobGate(max_waiting=max(4, a.clients)), JobClock()
    gate.add_listener(clock)
    body = {"model": "indextts2", "voice": "voice", "input": TEXT, "response_format": a.format,
            "settings": FAST}
    with LocalServer(engine, voices=VoiceCatalog(None, [work]), key=KEY, port=0, gate=gate) as server:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as client:
            for _ in range(3):
                client.post("/v1/audio/speech", json=body).raise_for_status()
            clock.durations.clear()
            walls = []
            for _ in range(a.requests):
                t = time.perf_counter()
                client.post("/v1/audio/speech", json=body).raise_for_status()
                walls.append(time.perf_counter() - t)
            jobs = list(clock.durations)
            t = time.perf_counter()
            for _ in range(a.requests):
                client.get("/health").raise_for_status()
            health = (time.perf_counter() - t) / a.requests

        def worker(n: int) -> None:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as c:
                for _ in range(n):
                    c.post("/v1/audio/speech", json=body).raise_for_status()

        per_client = max(1, a.requests // a.clients)
        t = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(per_client,)) for _ in range(a.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        parallel_rps = a.clients * per_client / (time.perf_counter() - t)

    overhead = [w - j for w, j in zip(walls, jobs)]
    print(f"tiny models, CPU, {a.threads} thread(s), {a.requests} requests of {len(TEXT)} characters, "
          f"format {a.format}")
    print(f"  engine alone (Engine.synthesize)      {ms(alone)}")
    print(f"  API request, HTTP round trip          {ms(walls)}")
    print(f"  API job inside the request            {ms(jobs)}")
    print(f"  overhead per request (round trip - job) {ms(overhead)}   target < 20 ms")
    print(f"  overhead vs engine alone (medians)    {(statistics.median(walls) - statistics.median(alone)) * 1000:7.2f}"
          " ms")
    print(f"  GET /health round trip                {health * 1000:7.2f} ms")
    print(f"  requests/s, 1 client                  {len(walls) / sum(walls):7.1f}")
    print(f"  requests/s, {a.clients} clients (one engine)    {parallel_rps:7.1f}")


if __name__ == "__main__":
    main()
