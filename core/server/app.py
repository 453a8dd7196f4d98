"""The OpenAI-compatible web application: ``create_app(engine, voices, key, limits)``.

``POST /v1/audio/speech`` takes OpenAI's fields (``model``, ``input``, ``voice``, ``response_format``,
``speed``, ``instructions``, ``stream_format``) plus IndexTTS2's (``emotion``, ``seed``, ``settings``); each
request becomes one :class:`core.api.SynthesisRequest` and one ``engine.synthesize`` call, admitted through a
:class:`core.jobs.JobGate` (its listeners see API jobs like any other). ``GET /v1/models``,
``GET /v1/audio/voices`` and ``GET /health`` describe the server. Every request needs ``Authorization: Bearer
<key>``. Errors are OpenAI-style JSON ``{"error": {"message", "type", "param", "code"}}`` with one clear line.

Audio is streamed: the first piece's bytes go out as soon as the engine has made it final (``on_chunk``: each
segment, or with ``settings.stream: true`` pieces inside a segment, one beam; a text of one segment without
``stream`` comes as a complete file). Nothing here blocks the event loop: the jobs run one after another on one
long-lived worker thread (a fresh thread per job would pay torch's per-thread warm-up every time, about doubling a
short job), which hands segments over through an asyncio queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..api import (
    EMOTION_NAMES,
    SAMPLE_RATE,
    AudioChunk,
    Cancelled,
    Emotion,
    EngineError,
    EngineProtocol,
    GenerationSettings,
    SettingError,
    SynthesisRequest,
    SynthesisResult,
    validate_emotion_vector,
)
from ..jobs import JobGate, QueueFull, Ticket
from ..voices import VoiceCatalog, VoiceNotFound
from .formats import FORMATS, StreamEncoder, encode

log = logging.getLogger(__name__)

MODEL_ID = "indextts2"
# OpenAI's model names are accepted too, so clients with a fixed model list work unchanged: there is one model.
MODEL_ALIASES = frozenset({MODEL_ID, "indextts-2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
# A model naming one IndexTTS version: served only while the app has that version loaded (one engine, one model).
MODEL_VERSIONS = {"indextts-2.0": "2.0", "indextts-2.5": "2.5"}


@dataclass(frozen=True)
class ServerLimits:
    max_input_chars: int = 4096  # characters of ``input`` (413 beyond)
    max_body_bytes: int = 64 * 1024  # bytes of the request body (413 beyond)
    max_waiting: int = 4  # jobs waiting for the engine (429 beyond), when no gate is given


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ------------------------------------------------------------------------------------------ request body


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmotionBody(_Strict):
    mode: Literal["speaker", "audio", "vector", "text"] = "speaker"
    vector: list[float] | None = None  # 8 weights, EMOTION_NAMES order
    alpha: float = 1.0
    text: str = ""  # mode "text": the description ("" = the input itself)
    voice: str | None = None  # mode "audio": a library voice whose clip carries the emotion
    random: bool = False


class SpeechBody(_Strict):
    model: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float | None = None
    instructions: str | None = None
    stream_format: str | None = None
    emotion: EmotionBody | None = None
    seed: int | None = None
    lang: str | None = None  # IndexTTS-2.5's language (settings.lang); None: from the input's script
    duration_factor: float | None = None  # IndexTTS-2.5's speech length factor 0.5-2.0 (settings.duration_factor)
    settings: dict[str, Any] | None = None


def _schema_error(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    unknown = [".".join(str(p) for p in e["loc"]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return ApiError(400, f"Unknown field(s): {', '.join(unknown)}.", param=unknown[0], code="unknown_field")
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    missing = first["type"] == "missing"
    message = f"Missing required field {where}." if missing else f"Invalid {where}: {first['msg']}."
    return ApiError(400, message, param=where.split(".")[0] if missing else where)


@dataclass(frozen=True)
class SpeechJob:
    request: SynthesisRequest
    format: str
    label: str
    version: str | None = None  # the IndexTTS version the request's model names (None: whichever is loaded)


def _emotion(body: SpeechBody, voices: VoiceCatalog) -> Emotion:
    e = body.emotion
    if e is not None and body.instructions:
        raise ApiError(400, "Give either instructions or emotion, not both.", param="instructions")
    if e is None:
        return Emotion("text", text=body.instructions) if body.instructions else Emotion()
    if not 0.0 <= e.alpha <= 1.0:
        raise ApiError(400, f"Invalid emotion.alpha {e.alpha}: use a number from 0 to 1.", param="emotion.alpha")
    if e.mode == "vector":
        if e.vector is None:
            raise ApiError(400, f"emotion.vector is required with mode 'vector': {len(EMOTION_NAMES)} numbers "
                                f"({', '.join(EMOTION_NAMES)}).", param="emotion.vector")
        try:
            validate_emotion_vector(e.vector)
        except EngineError as exc:
            raise ApiError(400, f"Invalid emotion.vector: {exc}", param="emotion.vector") from None
    elif e.vector is not None or e.random:
        raise ApiError(400, "emotion.vector and emotion.random need mode 'vector'.", param="emotion.vector")
    audio = None
    if e.mode == "audio":
        if not e.voice:
            raise ApiError(400, "emotion.voice is required with mode 'audio': the library voice whose clip "
                                "carries the emotion.", param="emotion.voice")
        audio = _voice(voices, e.voice, "emotion.voice")
    elif e.voice is not None:
        raise ApiError(400, "emotion.voice needs mode 'audio'.", param="emotion.voice")
    if e.text and e.mode != "text":
        raise ApiError(400, "emotion.text needs mode 'text'.", param="emotion.text")
    vector = tuple(e.vector) if e.vector is not None else None
    return Emotion(e.mode, audio=audio, alpha=e.alpha, vector=vector, text=e.text, random=e.random)


def _voice(voices: VoiceCatalog, name: str, param: str):
    try:
        return voices.resolve(name)
    except VoiceNotFound as exc:
        raise ApiError(404, str(exc), param=param, code="voice_not_found") from None


def _settings(body: SpeechBody) -> GenerationSettings:
    given = dict(body.settings or {})
    unknown = sorted(k for k in given if k not in GenerationSettings.__dataclass_fields__)
    if unknown:
        names = ", ".join(f"settings.{k}" for k in unknown)
        raise ApiError(400, f"Unknown field(s): {names}.", param=f"settings.{unknown[0]}", code="unknown_field")
    for name in ("seed", "lang", "duration_factor"):  # top-level fields, or the same inside settings
        value = getattr(body, name)
        if value is not None:
            if given.get(name) not in (None, value):
                raise ApiError(400, f"{name} and settings.{name} differ; give one.", param=name)
            given[name] = value
    return GenerationSettings(**given)


def parse_speech(raw: bytes, voices: VoiceCatalog, limits: ServerLimits) -> SpeechJob:
    """The request body as one SynthesisRequest (checked without the model), or the ApiError to answer."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        body = SpeechBody.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    if len(body.input) > limits.max_input_chars:
        raise ApiError(413, f"The input is {len(body.input)} characters long; the limit is {limits.max_input_chars}. "
                            "Split the text into several requests.", param="input", code="input_too_long")
    if body.model not in MODEL_ALIASES and body.model not in MODEL_VERSIONS:
        raise ApiError(404, f"Unknown model {body.model!r}; use {MODEL_ID!r} (the loaded model) or one of "
                            f"{', '.join(MODEL_VERSIONS)}.", param="model", code="model_not_found")
    if body.response_format not in FORMATS:
        raise ApiError(400, f"Unsupported response_format {body.response_format!r}; use one of "
                            f"{', '.join(FORMATS)}.", param="response_format")
    if body.speed is not None and body.speed != 1.0:
        raise ApiError(400, f"speed {body.speed} is not supported: IndexTTS2 speaks at the voice's own pace "
                            "(send 1.0 or leave it out).", param="speed")
    if body.stream_format not in (None, "audio"):
        raise ApiError(400, f"stream_format {body.stream_format!r} is not supported; use 'audio' (the default).",
                       param="stream_format")
    request = SynthesisRequest(body.input, _voice(voices, body.voice, "voice"), _emotion(body, voices),
                               _settings(body))
    label = " ".join(body.input.split())[:48]
    return SpeechJob(check_request(request), body.response_format, label, MODEL_VERSIONS.get(body.model))


def check_request(request: SynthesisRequest, limits: Any = None) -> SynthesisRequest:
    """``request.validate`` with its errors as 400s naming the field."""
    try:
        return request.validate(limits)
    except SettingError as exc:
        raise _setting_error(exc) from None
    except EngineError as exc:
        raise ApiError(400, str(exc), param=None if request.text.strip() else "input") from None


def _setting_error(exc: SettingError) -> ApiError:
    param = exc.setting if exc.setting in ("seed", "lang", "duration_factor") else f"settings.{exc.setting}"
    return ApiError(400, f"Invalid {param} = {exc.value!r}: allowed {exc.allowed}.", param=param)


# --------------------------------------------------------------------------------------------- the jobs


class _Job:
    """One API synthesis, run by the service's worker; segments, the result or the error arrive on ``items``."""

    def __init__(self, service: SpeechService, job: SpeechJob, ticket: Ticket, stream: bool) -> None:
        self.service, self.job, self.ticket = service, job, ticket
        self.cancel = ticket.cancel or threading.Event()
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.stream = stream

    def _put(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop is gone (shutdown): nobody is listening any more
            self.cancel.set()

    def run(self) -> None:
        try:
            with self.ticket:
                result = self.service.engine.synthesize(
                    self.job.request, on_progress=self.ticket.progress, cancel=self.cancel,
                    on_chunk=(lambda chunk: self._put("chunk", chunk)) if self.stream else None)
            self._put("done", result)
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers with it
            if not isinstance(exc, EngineError):
                log.exception("API job %s failed", self.ticket.info.id)
            self._put("error", exc)
        finally:
            self.service._forget(self)

    def abandon(self) -> None:
        """Nobody wants the result any more: stop the engine at its next step, or leave the queue now."""
        self.cancel.set()
        self.ticket.withdraw()

    async def next(self) -> tuple[str, Any]:
        kind, value = await self.items.get()
        if kind == "error":
            raise _engine_error(value)
        return kind, value

    async def result(self) -> SynthesisResult:
        while True:
            kind, value = await self.next()
            if kind == "done":
                return value


def _engine_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled):
        return ApiError(503, "The request was cancelled (the server is stopping).", kind="server_error",
                        code="cancelled")
    if isinstance(exc, SettingError):
        return _setting_error(exc)
    if isinstance(exc, EngineError):
        return ApiError(400, " ".join(str(exc).splitlines()), code="synthesis_failed")
    return ApiError(500, f"Internal error: {type(exc).__name__}. This is a bug in IndexTTS2 Desktop; the details "
                         "are in the server log.", kind="server_error", code="internal_error")


class SpeechService:
    """What the routes share: the engine, the voices, the key, the limits, the gate and the running jobs."""

    def __init__(self, engine: EngineProtocol, voices: VoiceCatalog, key: str | Callable[[], str],
                 limits: ServerLimits, gate: JobGate | None) -> None:
        self.engine, self.voices, self.limits = engine, voices, limits
        self._key = key
        self.gate = gate or JobGate(limits.max_waiting)
        self._jobs: set[_Job] = set()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self.closed = False

    @property
    def key(self) -> str:
        return self._key() if callable(self._key) else self._key

    @key.setter
    def key(self, value: str | Callable[[], str]) -> None:
        self._key = value

    def start(self, job: SpeechJob, stream: bool) -> _Job:
        if self.closed:
            raise ApiError(503, "The server is stopping.", kind="server_error")
        if not self.engine.loaded:
            raise ApiError(503, "The models are not loaded yet; try again when the studio is ready.",
                           kind="server_error", code="model_not_loaded", headers={"Retry-After": "5"})
        limits = self.engine.limits
        if job.version is not None and limits is not None and limits.version != job.version:
            raise ApiError(404, f"Model indextts-{job.version} is not loaded: the app has {limits.label} loaded. "
                                f"Use model {MODEL_ID!r}, or load IndexTTS-{job.version} in the app.", param="model",
                           code="model_not_loaded")
        check_request(job.request, limits)
        try:
            ticket = self.gate.submit("api", job.label, cancel=threading.Event())
        except QueueFull as exc:
            raise ApiError(429, str(exc), kind="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(exc.retry_after)}) from None
        running = _Job(self, job, ticket, stream)
        with self._lock:  # stop_jobs takes the lock too: a job is queued before the worker's end, or refused
            if self.closed:
                ticket.withdraw()
                raise ApiError(503, "The server is stopping.", kind="server_error")
            self._jobs.add(running)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="indextts-api-worker", daemon=True)
                self._worker.start()
            self._queue.put(running)
        return running

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            job.run()

    def _forget(self, job: _Job) -> None:
        with self._lock:
            self._jobs.discard(job)

    def stop_jobs(self, timeout: float = 30.0) -> threading.Thread | None:
        """Cancel every job and end the worker; the worker thread when it is still alive after ``timeout``."""
        with self._lock:
            self.closed = True
            jobs, worker = list(self._jobs), self._worker
            self._queue.put(None)
        for job in jobs:
            job.abandon()
        if worker is None:
            return None
        worker.join(timeout)
        return worker if worker.is_alive() else None


# ---------------------------------------------------------------------------------------------- streaming


class StreamAborted(Exception):
    """Raised inside a streaming body to cut the connection (the client must not take partial audio as whole)."""


class _QuietAbort(logging.Filter):
    """The ASGI server logs an aborted stream as a crash; it is logged (one line) here instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StreamAborted)


_quiet_abort = _QuietAbort()


async def _stream(job: _Job, first: AudioChunk, encoder: StreamEncoder) -> AsyncIterator[bytes]:
    """The result's bytes piece by piece as the engine makes them final (``on_chunk``: whole segments, or pieces
    of a segment with ``settings.stream``); the chunks already carry the silences between segments."""
    chunk = first
    try:
        while True:
            yield encoder.feed(chunk.audio)
            kind, value = await job.next()
            if kind == "done":
                tail = encoder.close()
                if tail:
                    yield tail
                return
            chunk = value
    except ApiError as exc:  # the headers are out: end the response unfinished, so the client sees an error
        log.warning("API job %s stopped while streaming: %s", job.ticket.info.id, exc.message)
        raise StreamAborted(exc.message) from None
    finally:
        job.abandon()  # the client went away, or the job is over: either way nothing more is wanted


async def _until_disconnect(request: Request, every: float = 0.25) -> None:
    """Return once the client has gone away (it closed the connection or gave up waiting)."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)


async def _before_disconnect(running: _Job, request: Request, step: Callable[[], Any]) -> Any:
    """``await step()``, unless the client leaves first: then the job is cancelled (a waiting one leaves the
    queue at once) and nobody is answered."""
    work = asyncio.ensure_future(step())
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        running.abandon()
        log.info("API job %s: the client went away; cancelled", running.ticket.info.id)
        raise ApiError(499, "The client closed the request.", code="client_closed")
    return work.result()


async def _speak(service: SpeechService, job: SpeechJob, request: Request) -> Response:
    running = service.start(job, stream=True)
    try:
        kind, value = await _before_disconnect(running, request, running.next)
        if kind == "chunk" and not (value.last and value.segments == 1):  # more pieces will follow
            encoder = StreamEncoder(job.format)
            return StreamingResponse(_stream(running, value, encoder), media_type=encoder.format.media_type)
        result = value if kind == "done" else await _before_disconnect(running, request, running.result)
    except BaseException:
        running.abandon()
        raise
    return Response(encode(result.audio, job.format), media_type=FORMATS[job.format].media_type)


# ------------------------------------------------------------------------------------------------ the app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(engine: EngineProtocol, voices: VoiceCatalog, key: str | Callable[[], str],
               limits: ServerLimits | None = None, gate: JobGate | None = None) -> FastAPI:
    """The web application over ``engine``. ``key`` may be a function (a rotated key applies at once); ``gate``
    is shared with other front ends (the GUI) so their jobs and API jobs take turns."""
    service = SpeechService(engine, voices, key, limits or ServerLimits(), gate)
    logging.getLogger("uvicorn.error").addFilter(_quiet_abort)  # the same filter object: added once

    async def authorize(request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise ApiError(401, "Missing API key: send the header 'Authorization: Bearer <key>'.",
                           kind="authentication_error", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        scheme, _, token = header.partition(" ")
        expected = service.key.encode("utf-8")
        if not (hmac.compare_digest(token.strip().encode("utf-8"), expected) and scheme.lower() == "bearer"):
            raise ApiError(401, "Invalid API key.", kind="authentication_error", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="IndexTTS2 local API", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(authorize)])
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail)).response()

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        job = parse_speech(await _read_body(request, service.limits.max_body_bytes), service.voices,
                           service.limits)
        return await _speak(service, job, request)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                                             "owned_by": "indextts2-desktop"}]}

    @app.get("/v1/audio/voices")
    async def list_voices() -> dict:
        entries = service.voices.entries()
        return {"voices": [{"id": e.name, "name": e.name, "duration": e.duration(), "origin": e.origin}
                           for e in entries]}

    @app.get("/health")
    async def health() -> dict:
        status = service.gate.status()
        return {"status": "ok", "model_loaded": bool(engine.loaded), "sample_rate": SAMPLE_RATE,
                "queue": {"running": status.running is not None, "waiting": len(status.waiting),
                          "max_waiting": service.gate.max_waiting}}

    return app
