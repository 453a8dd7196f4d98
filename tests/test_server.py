"""The local speech server: a live server on loopback over the tiny models, driven by the official ``openai``
client (and plain ``httpx`` where the client would add headers of its own).

The engine is the real :class:`core.engine.Engine` on the tiny model folder (``tests/tiny_models.py``); voices
come from a voice library in the desktop's format and from a ``--voices`` folder. Streaming and the job queue
are proven by event order (the gate's listener can hold the engine between segments), never by timing.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2  # the HTTP library of the openai client
import numpy as np
import openai
import pytest
import soundfile as sf
from tiny_models import single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import SAMPLE_RATE, Emotion, GenerationSettings, SynthesisRequest
from core.engine import Engine
from core.jobs import JobEvent, JobGate
from core.server.app import ServerLimits
from core.server.formats import OPUS_RATE
from core.server.keys import ensure_key, load_key, resolve_key, rotate_key
from core.server.runner import LocalServer, ServerError, check_bind, is_loopback
from core.voices import VoiceCatalog, read_library

REPO = Path(__file__).resolve().parent.parent
KEY = "test-key-0123456789abcdef"
SHORT = "Hello there."
LONG = "The first sentence is here. Then a second one follows, a little longer. And a third closes it."
FAST = {"do_sample": False, "num_beams": 1, "max_mel_tokens": 8, "diffusion_steps": 2}
SEGMENTED = {**FAST, "max_text_tokens_per_segment": 12}
LIMITS = ServerLimits(max_input_chars=400, max_body_bytes=8192, max_waiting=1)
WAIT = 120.0  # seconds any event may take on a loaded 2-core machine before the test fails


def decode(data: bytes) -> tuple[int, np.ndarray]:
    """Sample rate and int16 samples of an encoded stream, read to its end (streams may say "length unknown")."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        out = np.zeros(f.samplerate * 120, dtype=np.int16)
        n = sf._snd.sf_readf_short(f._file, sf._ffi.cast("short*", out.ctypes.data), len(out))
        return f.samplerate, out[:n].copy()


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server")
    for voice_id, name, seed in (("20250101-000000-aaaaaa", "Alice", 1), ("20250101-000001-bbbbbb", "Bob", 2)):
        folder = root / "library" / voice_id
        folder.mkdir(parents=True)
        write_clip(folder / "reference.wav", 1.2 + seed / 10, 170.0 + 20 * seed, seed=seed)
        (folder / "voice.json").write_text(json.dumps({"name": name, "created": seed, "source": "test"}))
    (root / "folder").mkdir()
    write_clip(root / "folder" / "narrator.wav", 1.5, 210.0, seed=5)
    (root / "folder" / "notes.txt").write_text("not a voice")
    return root


@pytest.fixture(scope="module")
def voices(work: Path) -> VoiceCatalog:
    return VoiceCatalog(work / "library", [work / "folder"])


@pytest.fixture(scope="module")
def engine(work: Path) -> Engine:
    e = Engine(cache_dir=work / "cache")
    e.load(tiny_model_dir(), device="cpu")
    return e


class Recorder:
    """The gate's listener: every event in order; ``hold`` makes a chosen progress event wait."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.lock = threading.Lock()
        self.hold: tuple[object, threading.Event] | None = None  # (predicate, release)

    def __call__(self, event: JobEvent) -> None:
        with self.lock:
            self.events.append(event)
            hold = self.hold
        if hold is not None and hold[0](event):  # type: ignore[operator]
            self.hold = None
            hold[1].wait(WAIT)

    def wait_for(self, predicate, timeout: float = WAIT) -> JobEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = next((e for e in self.events if predicate(e)), None)
            if found is not None:
                return found
            time.sleep(0.01)
        raise AssertionError(f"the expected job event never came; got {[(e.kind, e.progress) for e in self.events]}")


@pytest.fixture(scope="module")
def gate() -> JobGate:
    return JobGate(max_waiting=LIMITS.max_waiting)


@pytest.fixture()
def recorder(gate: JobGate) -> Iterator[Recorder]:
    rec = Recorder()
    remove = gate.add_listener(rec)
    yield rec
    remove()


@pytest.fixture(scope="module")
def server(engine: Engine, voices: VoiceCatalog, gate: JobGate) -> Iterator[LocalServer]:
    srv = LocalServer(engine, voices=voices, key=KEY, port=0, limits=LIMITS, gate=gate)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: LocalServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=WAIT)


def speak(client: openai.OpenAI, text: str = SHORT, voice: str = "Alice", fmt: str = "wav",
          **extra: object) -> bytes:
    body = {"settings": dict(FAST), **extra}
    return client.audio.speech.create(model="indextts2", voice=voice, input=text, response_format=fmt,
                                      extra_body=body).content


def solo(engine: Engine, voices: VoiceCatalog, text: str, voice: str, settings: dict, seed: int | None = None,
         emotion: Emotion | None = None) -> np.ndarray:
    request = SynthesisRequest(text, voices.resolve(voice), emotion, GenerationSettings(**settings, seed=seed))
    return engine.synthesize(request).audio


def post(server: LocalServer, path: str, body: object = None, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.base_url}{path}", content=content, headers=headers, timeout=WAIT, **kw)


def get(server: LocalServer, path: str, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(f"{server.base_url}{path}", headers=headers, timeout=WAIT)


def speech_body(**over: object) -> dict:
    return {"model": "indextts2", "voice": "Alice", "input": SHORT, "response_format": "pcm",
            "settings": dict(FAST), **over}


# ------------------------------------------------------------------------------------------ audio formats


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "pcm"])
def test_speech_in_each_format(client: openai.OpenAI, engine: Engine, voices: VoiceCatalog, fmt: str) -> None:
    data = speak(client, fmt=fmt, seed=3)
    expected = solo(engine, voices, SHORT, "Alice", FAST, seed=3)
    assert expected.size > 1000
    if fmt == "pcm":  # raw int16 little-endian at 22050 Hz, no header
        np.testing.assert_array_equal(np.frombuffer(data, "<i2"), expected)
        return
    rate, audio = decode(data)
    if fmt in ("wav", "flac"):  # lossless: the engine's very samples
        assert rate == SAMPLE_RATE
        np.testing.assert_array_equal(audio, expected)
    elif fmt == "mp3":
        assert rate == SAMPLE_RATE and data[:2] == b"\xff\xf3"  # MPEG-2 layer III: the 22050 Hz family
        assert abs(audio.size - expected.size) < 0.01 * SAMPLE_RATE
    else:  # Opus has no 22.05 kHz mode: the audio is resampled to 24 kHz, same duration
        assert rate == OPUS_RATE and data[:4] == b"OggS" and b"OpusHead" in data[:64]
        assert abs(audio.size / OPUS_RATE - expected.size / SAMPLE_RATE) < 0.01


def test_library_and_folder_voices_speak_their_own_clip(client: openai.OpenAI, engine: Engine,
                                                        voices: VoiceCatalog) -> None:
    bob = np.frombuffer(speak(client, voice="Bob", fmt="pcm", seed=1), "<i2")
    narrator = np.frombuffer(speak(client, voice="narrator", fmt="pcm", seed=1), "<i2")
    np.testing.assert_array_equal(bob, solo(engine, voices, SHORT, "Bob", FAST, seed=1))
    np.testing.assert_array_equal(narrator, solo(engine, voices, SHORT, "narrator", FAST, seed=1))
    assert not np.array_equal(bob[: min(bob.size, narrator.size)], narrator[: min(bob.size, narrator.size)])


def test_emotion_extensions_reach_the_engine(client: openai.OpenAI, engine: Engine, voices: VoiceCatalog) -> None:
    vector = [0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.2]
    got = speak(client, fmt="pcm", seed=2, emotion={"mode": "vector", "vector": vector, "alpha": 0.8})
    want = solo(engine, voices, SHORT, "Alice", FAST, seed=2, emotion=Emotion("vector", vector=tuple(vector),
                                                                               alpha=0.8))
    np.testing.assert_array_equal(np.frombuffer(got, "<i2"), want)
    got = speak(client, fmt="pcm", seed=2, emotion={"mode": "audio", "voice": "narrator", "alpha": 0.5})
    want = solo(engine, voices, SHORT, "Alice", FAST, seed=2,
                emotion=Emotion("audio", audio=voices.resolve("narrator"), alpha=0.5))
    np.testing.assert_array_equal(np.frombuffer(got, "<i2"), want)


# ------------------------------------------------------------------------------------------------ streaming


def _last_segment_starts(event: JobEvent) -> bool:
    p = event.progress
    return (event.job.source == "api" and p is not None and p.segments > 1 and p.segment == p.segments
            and p.stage == "Generating speech codes")


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
def test_streaming_sends_the_first_segment_before_the_last_is_rendered(
        client: openai.OpenAI, engine: Engine, voices: VoiceCatalog, recorder: Recorder, fmt: str) -> None:
    expected = solo(engine, voices, LONG, "Alice", SEGMENTED, seed=4)
    first_bytes = threading.Event()
    recorder.hold = (_last_segment_starts, first_bytes)  # the engine may not render the last segment ...
    chunks: list[bytes] = []
    with client.audio.speech.with_streaming_response.create(
            model="indextts2", voice="Alice", input=LONG, response_format=fmt,  # type: ignore[arg-type]
            extra_body={"settings": dict(SEGMENTED), "seed": 4}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            if chunk and not first_bytes.is_set():
                held = recorder.wait_for(_last_segment_starts)  # ... until bytes have arrived here
                with recorder.lock:
                    rendered_before = [e for e in recorder.events[: recorder.events.index(held)]
                                       if e.progress is not None and e.progress.stage == "Done"]
                assert not rendered_before
                first_bytes.set()
            chunks.append(chunk)
    assert first_bytes.is_set()
    data = b"".join(chunks)
    assert recorder.wait_for(lambda e: e.kind == "finished")
    if fmt == "mp3":
        rate, audio = decode(data)
        assert rate == SAMPLE_RATE and abs(audio.size - expected.size) < 0.1 * SAMPLE_RATE
        return
    audio = np.frombuffer(data[44:] if fmt == "wav" else data, "<i2")
    np.testing.assert_array_equal(audio, expected)  # the stream joins segments exactly as the engine does
    if fmt == "wav":  # the "unknown length" header still decodes to every sample
        rate, decoded = decode(data)
        assert rate == SAMPLE_RATE
        np.testing.assert_array_equal(decoded, expected)


# --------------------------------------------------------------------------------------------------- errors


def test_missing_or_wrong_key_is_401(server: LocalServer) -> None:
    for key in (None, "wrong-key-0123456789abcdef", KEY[:-1], KEY + "x"):
        r = post(server, "/v1/audio/speech", speech_body(), key=key)
        assert r.status_code == 401, key
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["error"]["type"] == "authentication_error"
    for header in (f"Basic {KEY}", KEY, "Bearer"):  # the key alone, or under another scheme, is not enough
        r = httpx.get(f"{server.base_url}/health", headers={"Authorization": header}, timeout=WAIT)
        assert r.status_code == 401, header
    assert get(server, "/health", key=None).status_code == 401
    assert get(server, "/v1/models", key="nope-nope-nope-nope").status_code == 401
    wrong = openai.OpenAI(base_url=server.url, api_key="wrong-key-0123456789abcdef", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.audio.speech.create(model="indextts2", voice="Alice", input=SHORT)
    assert info.value.status_code == 401 and "Invalid API key" in info.value.message


@pytest.mark.parametrize("voice", ["Nobody", "alice", "reference", "narrator.wav", "../library", "__file__"])
def test_unknown_voice_is_404(client: openai.OpenAI, voice: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        speak(client, voice=voice)
    assert info.value.status_code == 404 and repr(voice) in info.value.message


def test_a_file_path_is_never_a_voice(server: LocalServer, voices: VoiceCatalog, work: Path) -> None:
    for path in (voices.resolve("Alice"), work / "folder" / "narrator.wav", Path("/etc/passwd")):
        r = post(server, "/v1/audio/speech", speech_body(voice=str(path)))
        assert r.status_code == 404 and r.json()["error"]["param"] == "voice"
    r = post(server, "/v1/audio/speech", speech_body(emotion={"mode": "audio", "voice": str(voices.resolve("Bob"))}))
    assert r.status_code == 404 and r.json()["error"]["param"] == "emotion.voice"


@pytest.mark.parametrize("emotion, param, words", [
    ({"mode": "vector", "vector": [0.1] * 7}, "emotion.vector", "exactly 8 values"),
    ({"mode": "vector", "vector": [0.1, -0.5, 0, 0, 0, 0, 0, 0]}, "emotion.vector", "'angry' is negative"),
    ({"mode": "vector", "vector": [0] * 8}, "emotion.vector", "all zeros"),
    ({"mode": "vector", "vector": ["a"] * 8}, "emotion.vector.0", "valid number"),
    ({"mode": "vector"}, "emotion.vector", "required"),
    ({"mode": "vector", "vector": [0.5] + [0] * 7, "alpha": 1.5}, "emotion.alpha", "from 0 to 1"),
    ({"mode": "joyful"}, "emotion.mode", "speaker"),
    ({"mode": "audio"}, "emotion.voice", "required"),
    ({"mode": "speaker", "vector": [0.5] + [0] * 7}, "emotion.vector", "mode 'vector'"),
])
def test_bad_emotion_is_400_naming_the_field(server: LocalServer, emotion: dict, param: str, words: str) -> None:
    r = post(server, "/v1/audio/speech", speech_body(emotion=emotion))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"] and words in error["message"], error


@pytest.mark.parametrize("over, param, words", [
    ({"foo": 1, "bar": 2}, "foo", "Unknown field(s): foo, bar"),
    ({"settings": {"top_q": 1}}, "settings.top_q", "Unknown field(s): settings.top_q"),
    ({"emotion": {"mode": "speaker", "strength": 1}}, "emotion.strength", "emotion.strength"),
    ({"speed": 1.5}, "speed", "speed 1.5 is not supported"),
    ({"response_format": "aac"}, "response_format", "mp3, opus, flac, wav, pcm"),
    ({"stream_format": "sse"}, "stream_format", "'sse'"),
    ({"settings": {"top_k": -1}}, "settings.top_k", "settings.top_k = -1"),
    ({"settings": {"max_mel_tokens": 10**6}}, "settings.max_mel_tokens", "allowed"),
    ({"seed": -3}, "seed", "seed = -3"),
    ({"input": "   "}, "input", "empty"),
    ({"input": 5}, "input", "valid string"),
])
def test_bad_fields_are_400_naming_them(server: LocalServer, over: dict, param: str, words: str) -> None:
    r = post(server, "/v1/audio/speech", speech_body(**over))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_missing_field_and_unknown_model(server: LocalServer) -> None:
    body = speech_body()
    del body["voice"]
    r = post(server, "/v1/audio/speech", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
    r = post(server, "/v1/audio/speech", speech_body(model="whisper-1"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert post(server, "/v1/audio/speech", b"{not json").status_code == 400


def test_speed_one_and_openai_model_names_are_accepted(client: openai.OpenAI, engine: Engine,
                                                       voices: VoiceCatalog) -> None:
    data = client.audio.speech.create(model="tts-1", voice="Alice", input=SHORT, response_format="pcm", speed=1.0,
                                      extra_body={"settings": dict(FAST), "seed": 5}).content
    np.testing.assert_array_equal(np.frombuffer(data, "<i2"), solo(engine, voices, SHORT, "Alice", FAST, seed=5))


def test_oversized_input_and_body_are_413(client: openai.OpenAI, server: LocalServer) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        speak(client, text="word " * 100)  # 500 characters > 400
    assert info.value.status_code == 413 and "limit is 400" in info.value.message
    r = post(server, "/v1/audio/speech", speech_body(extra="x" * 10_000))  # body over 8192 bytes
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the size is counted as the body arrives
        yield b'{"model": "indextts2", "input": "'
        for _ in range(20):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(f"{server.base_url}/v1/audio/speech", content=chunked(), timeout=WAIT,
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 413


# -------------------------------------------------------------------------------------- queue and sharing


def _gui_job(engine: Engine, request: SynthesisRequest, release: threading.Event, held: threading.Event,
             box: dict) -> threading.Thread:
    """A job as the GUI runs one: engine.synthesize on a worker thread; it holds the engine until ``release``."""

    def on_segment(seg) -> None:
        held.set()
        release.wait(WAIT)

    def run() -> None:
        box["result"] = engine.synthesize(request, on_segment=on_segment)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _api_call(server: LocalServer, body: dict, box: dict, name: str) -> threading.Thread:
    t = threading.Thread(target=lambda: box.__setitem__(name, post(server, "/v1/audio/speech", body)),
                         daemon=True)
    t.start()
    return t


def test_api_job_waits_for_a_gui_job_and_both_equal_their_solo_runs(
        server: LocalServer, engine: Engine, voices: VoiceCatalog, recorder: Recorder) -> None:
    sampled = {**FAST, "do_sample": True, "top_k": 20}
    gui_request = SynthesisRequest(LONG, voices.resolve("Bob"),
                                   settings=GenerationSettings(**{**SEGMENTED, "do_sample": True}, seed=11))
    gui_solo = engine.synthesize(gui_request).audio
    api_body = speech_body(settings=sampled, seed=12)
    api_solo = np.frombuffer(post(server, "/v1/audio/speech", api_body).content, "<i2")
    assert api_solo.size and not np.array_equal(api_solo, solo(engine, voices, SHORT, "Alice", sampled, seed=13))

    with recorder.lock:
        recorder.events.clear()
    release, held, box = threading.Event(), threading.Event(), {}
    gui = _gui_job(engine, gui_request, release, held, box)
    assert held.wait(WAIT)  # the GUI job holds the engine now
    api = _api_call(server, api_body, box, "api")
    recorder.wait_for(lambda e: e.kind == "started")  # admitted by the gate, then blocked on the engine
    assert api.is_alive()
    with recorder.lock:
        assert [e.kind for e in recorder.events] == ["queued", "started"]  # no progress: it waits its turn
        released_at = len(recorder.events)
    release.set()
    gui.join(WAIT)
    api.join(WAIT)
    assert not gui.is_alive() and not api.is_alive()
    assert box["api"].status_code == 200
    with recorder.lock:
        kinds = [e.kind for e in recorder.events]
    assert kinds[:released_at] == ["queued", "started"] and kinds[-1] == "finished"
    np.testing.assert_array_equal(box["result"].audio, gui_solo)
    np.testing.assert_array_equal(np.frombuffer(box["api"].content, "<i2"), api_solo)


def test_full_queue_is_429_with_retry_after(server: LocalServer, engine: Engine, voices: VoiceCatalog,
                                            recorder: Recorder) -> None:
    release, held, box = threading.Event(), threading.Event(), {}
    gui = _gui_job(engine, SynthesisRequest(LONG, voices.resolve("Bob"), settings=GenerationSettings(**SEGMENTED)),
                   release, held, box)
    assert held.wait(WAIT)
    first = _api_call(server, speech_body(input="First one."), box, "first")  # runs (blocked on the engine)
    recorder.wait_for(lambda e: e.kind == "started" and e.job.label == "First one.")
    second = _api_call(server, speech_body(input="Second one."), box, "second")  # waits: the one free place
    recorder.wait_for(lambda e: e.kind == "queued" and e.job.label == "Second one.")
    r = post(server, "/v1/audio/speech", speech_body(input="Third one."))
    status = get(server, "/health").json()["queue"]
    release.set()
    for t in (gui, first, second):
        t.join(WAIT)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
    assert int(r.headers["retry-after"]) >= 1
    assert status == {"running": True, "waiting": 1, "max_waiting": 1}
    assert box["first"].status_code == 200 and box["second"].status_code == 200
    labels = [e.job.label for e in recorder.events if e.kind == "finished"]
    assert labels == ["First one.", "Second one."]  # in the order they came


def test_a_client_that_leaves_the_queue_frees_its_place(server: LocalServer, engine: Engine, voices: VoiceCatalog,
                                                      recorder: Recorder) -> None:
    release, held, box = threading.Event(), threading.Event(), {}
    gui = _gui_job(engine, SynthesisRequest(LONG, voices.resolve("Bob"), settings=GenerationSettings(**SEGMENTED)),
                   release, held, box)
    assert held.wait(WAIT)
    try:
        first = _api_call(server, speech_body(input="Stays."), box, "first")
        recorder.wait_for(lambda e: e.kind == "started" and e.job.label == "Stays.")
        body = json.dumps(speech_body(input="Leaves.")).encode()
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        raw.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        recorder.wait_for(lambda e: e.kind == "queued" and e.job.label == "Leaves.")
        raw.close()  # the client gives up while its job waits
        recorder.wait_for(lambda e: e.kind == "cancelled" and e.job.label == "Leaves.")
        waiting = get(server, "/health").json()["queue"]["waiting"]
        assert gui.is_alive()  # all this while the engine was still busy with the GUI's job
    finally:
        release.set()
    gui.join(WAIT)
    first.join(WAIT)
    assert waiting == 0 and box["first"].status_code == 200
    assert not [e for e in recorder.events if e.job.label == "Leaves." and e.kind in ("started", "progress")]


# ------------------------------------------------------------------------------------------ the other routes


def test_models_voices_and_health(server: LocalServer, work: Path, engine: Engine) -> None:
    models = get(server, "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["indextts2"]
    listed = get(server, "/v1/audio/voices").json()["voices"]
    assert [(v["name"], v["origin"]) for v in listed] == [("Alice", "library"), ("Bob", "library"),
                                                           ("narrator", "folder")]
    durations = {v["name"]: v["duration"] for v in listed}
    assert durations["Alice"] == pytest.approx(1.3) and durations["Bob"] == pytest.approx(1.4)
    assert durations["narrator"] == pytest.approx(1.5)
    health = get(server, "/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True and health["sample_rate"] == SAMPLE_RATE
    openai_models = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0).models.list()
    assert [m.id for m in openai_models.data] == ["indextts2"]


def test_unloaded_engine_is_503(voices: VoiceCatalog) -> None:
    with LocalServer(Engine(), voices=voices, key=KEY, port=0) as srv:
        r = post(srv, "/v1/audio/speech", speech_body())
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
        assert get(srv, "/health").json()["model_loaded"] is False


# ------------------------------------------------------------------------------------------ start and stop


def test_stop_leaves_no_thread_or_port(engine: Engine, voices: VoiceCatalog) -> None:
    before = set(threading.enumerate())
    srv = LocalServer(engine, voices=voices, key=KEY, port=0)
    url = srv.start()
    port = srv.port
    assert port and url == f"http://127.0.0.1:{port}/v1" and srv.status().running
    assert post(srv, "/v1/audio/speech", speech_body()).status_code == 200
    srv.stop()
    srv.stop()  # a second stop is a no-op
    assert set(threading.enumerate()) == before
    assert not srv.running and srv.port is None and srv.url is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))  # the port is free again
    probe.close()
    srv.start()  # and the same handle starts again
    try:
        assert get(srv, "/health").status_code == 200
    finally:
        srv.stop()
    assert set(threading.enumerate()) == before


def test_stop_cancels_a_streaming_job(engine: Engine, voices: VoiceCatalog) -> None:
    before = set(threading.enumerate())
    gate = JobGate()
    srv = LocalServer(engine, voices=voices, key=KEY, port=0, gate=gate)
    rec = Recorder()
    gate.add_listener(rec)
    never = threading.Event()
    rec.hold = (_last_segment_starts, never)
    srv.start()
    client = openai.OpenAI(base_url=srv.url, api_key=KEY, max_retries=0, timeout=WAIT)
    with client.audio.speech.with_streaming_response.create(
            model="indextts2", voice="Alice", input=LONG, response_format="pcm",
            extra_body={"settings": dict(SEGMENTED)}) as response:
        chunks = response.iter_bytes()
        assert next(chunks)
        rec.wait_for(_last_segment_starts)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        rec.wait_for(lambda e: e.kind == "started")
        never.set()  # the held job sees its cancel event at the next step
        with pytest.raises(httpx2.HTTPError):  # the response ends unfinished: the client sees an error
            for _ in chunks:
                pass
    stopper.join(WAIT)
    assert rec.wait_for(lambda e: e.kind in ("cancelled", "failed")).kind == "cancelled"
    assert set(threading.enumerate()) == before


def test_port_in_use_is_a_clear_error(engine: Engine, voices: VoiceCatalog, server: LocalServer) -> None:
    with pytest.raises(ServerError, match=f"Port {server.port} on 127.0.0.1 is already in use"):
        LocalServer(engine, voices=voices, key=KEY, port=server.port).start()


def test_non_loopback_bind_needs_the_flag(engine: Engine, voices: VoiceCatalog,
                                          caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        with pytest.raises(ServerError, match="--allow-remote"):
            LocalServer(engine, voices=voices, key=KEY, host=host, port=0).start()
    assert set(threading.enumerate()) == before
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("localhost") and not is_loopback("0.0.0.0") and not is_loopback("8.8.8.8")
    with caplog.at_level(logging.WARNING, logger="core.server.runner"):
        check_bind("0.0.0.0", allow_remote=True)
    assert "other machines" in caplog.text


def _serve_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS")}
    env.update(INDEXTTS2_DESKTOP_HOME=str(home), OMP_NUM_THREADS="1", HF_HOME=str(home / "hf"))
    return env


def test_serve_command_refuses_remote_without_flag(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=_serve_env(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in proc.stderr and "--allow-remote" in proc.stderr
    assert not (tmp_path / "config" / "api_key").exists()  # refused before anything else


def test_serve_command_end_to_end(tmp_path: Path, work: Path) -> None:
    home = tmp_path / "home"
    cmd = [sys.executable, str(REPO / "main.py"), "serve", "--port", "0", "--model-dir", str(tiny_model_dir()),
           "--device", "cpu", "--voices", str(work / "folder")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_serve_env(home))
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Voices:"):
                break
        url = next(line.split()[3] for line in lines if line.startswith("IndexTTS2 speech server:"))
        key = load_key(home / "config" / "api_key")
        assert key and f"API key: {key}" in "".join(lines)
        client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=WAIT)
        data = client.audio.speech.create(model="indextts2", voice="narrator", input=SHORT, response_format="wav",
                                          extra_body={"settings": dict(FAST), "seed": 0}).content
        rate, audio = decode(data)
        assert rate == SAMPLE_RATE and audio.size > 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped")
    assert "job 1 finished in" in err and "'Hello there.'" in err  # the terminal logs each job


# --------------------------------------------------------------------------------------------------- the key


def test_key_file_is_private_stable_and_rotates(tmp_path: Path, engine: Engine, voices: VoiceCatalog) -> None:
    path = tmp_path / "config" / "api_key"
    key = ensure_key(path)
    assert len(key) >= 40 and ensure_key(path) == key == load_key(path)
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)
        assert load_key(path) == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_key(None, env={}, path=path) == (key, str(path))
    assert resolve_key(None, env={"INDEXTTS_API_KEY": KEY}, path=path) == (KEY, "$INDEXTTS_API_KEY")
    assert resolve_key("x" * 20, env={"INDEXTTS_API_KEY": KEY}, path=path)[0] == "x" * 20
    with LocalServer(engine, voices=voices, key=lambda: load_key(path) or "", port=0) as srv:
        assert get(srv, "/health", key=key).status_code == 200
        new = rotate_key(path)
        assert new != key and not list(path.parent.glob(".api_key-*"))
        assert get(srv, "/health", key=key).status_code == 401  # the old key stops working at once
        assert get(srv, "/health", key=new).status_code == 200
        srv.set_key(KEY)
        assert get(srv, "/health", key=KEY).status_code == 200 and get(srv, "/health", key=new).status_code == 401


# ------------------------------------------------------------------------------------------ the voice library


def test_core_reads_the_library_the_desktop_writes(tmp_path: Path) -> None:
    from desktop.voice_library import VoiceLibrary  # the writer (torch- and Tk-free)

    library = VoiceLibrary(tmp_path / "voices")
    carol = library.add_file("Carol", write_clip(tmp_path / "carol.flac", 1.1, 190.0, seed=7))
    dave = library.add_audio("Dave", np.zeros(22050, dtype=np.int16) + 100, 22050)
    library.rename(dave.id, "David")
    (tmp_path / "voices" / "broken").mkdir()
    (tmp_path / "voices" / "broken" / "voice.json").write_text("{not json")
    read = read_library(tmp_path / "voices")
    assert [(v.id, v.name, v.clip) for v in read] == [(carol.id, "Carol", carol.clip), (dave.id, "David", dave.clip)]
    catalog = VoiceCatalog(tmp_path / "voices")
    assert catalog.resolve("David") == dave.clip
    assert [(e.name, e.duration()) for e in catalog.entries()] == [("Carol", pytest.approx(1.1)), ("David", 1.0)]


def test_stream_setting_streams_inside_one_segment(client: openai.OpenAI, engine: Engine,
                                                   voices: VoiceCatalog) -> None:
    """settings.stream: a one-segment text comes in the engine's chunks (on_chunk), not as one file at the end;
    the bytes are exactly the streamed render's audio."""
    from core.streaming import StreamPlan

    settings = {**FAST, "max_mel_tokens": 30, "stream": True}
    plan, engine.stream_plan = engine.stream_plan, StreamPlan(first_codes=4, growth=1.0, max_codes=4,
                                                               overlap_codes=1)
    try:
        pieces: list[int] = []
        request = SynthesisRequest(SHORT, voices.resolve("Alice"), None, GenerationSettings(**settings, seed=2))
        expected = engine.synthesize(request, on_chunk=lambda c: pieces.append(c.audio.size)).audio
        assert len(pieces) > 1, "the test needs a segment of several chunks"
        with client.audio.speech.with_streaming_response.create(
                model="indextts2", voice="Alice", input=SHORT, response_format="pcm",
                extra_body={"settings": settings, "seed": 2}) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers  # a stream, not a file sent at the end
            data = b"".join(response.iter_bytes())
    finally:
        engine.stream_plan = plan
    np.testing.assert_array_equal(np.frombuffer(data, "<i2"), expected)
