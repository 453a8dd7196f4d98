"""The local API with IndexTTS-2.5 loaded: ``lang`` and ``duration_factor`` (top level or in ``settings``) reach the
engine, ``model`` may name the loaded version, and a wrong one is a clear 4xx naming the field (real server on
loopback, real openai client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from test_server import FAST, KEY, LIMITS, SHORT, WAIT, post
from tiny_models import single_thread, tiny_v25_model_dir, write_clip  # noqa: F401 - fixture

from core.api import GenerationSettings, SynthesisRequest
from core.engine import Engine
from core.server.runner import LocalServer
from core.voices import VoiceCatalog


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> VoiceCatalog:
    root = tmp_path_factory.mktemp("server25")
    folder = root / "library" / "20250101-000000-aaaaaa"
    folder.mkdir(parents=True)
    write_clip(folder / "reference.wav", 1.3, 190.0, seed=1)
    (folder / "voice.json").write_text(json.dumps({"name": "Alice", "created": 1, "source": "test"}))
    return VoiceCatalog(root / "library", [])


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine()
    e.load(tiny_v25_model_dir(), device="cpu")
    return e


@pytest.fixture(scope="module")
def server(engine: Engine, voices: VoiceCatalog) -> Iterator[LocalServer]:
    srv = LocalServer(engine, voices=voices, key=KEY, port=0, limits=LIMITS)
    srv.start()
    yield srv
    srv.stop()


def _solo(engine: Engine, voices: VoiceCatalog, **settings: object) -> np.ndarray:
    request = SynthesisRequest(SHORT, voices.resolve("Alice"), settings=GenerationSettings(**FAST, seed=3,
                                                                                            **settings))  # type: ignore[arg-type]
    return engine.synthesize(request).audio


def test_lang_and_duration_reach_the_engine(server: LocalServer, engine: Engine, voices: VoiceCatalog) -> None:
    client = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=WAIT)
    data = client.audio.speech.create(model="indextts-2.5", voice="Alice", input=SHORT, response_format="pcm",
                                      extra_body={"settings": dict(FAST), "seed": 3, "lang": "es",
                                                  "duration_factor": 1.8}).content
    got = np.frombuffer(data, "<i2")
    np.testing.assert_array_equal(got, _solo(engine, voices, lang="es", duration_factor=1.8))
    assert got.size > _solo(engine, voices, lang="es").size
    inside = post(server, "/v1/audio/speech", {"model": "indextts2", "voice": "Alice", "input": SHORT,
                                               "response_format": "pcm", "seed": 3,
                                               "settings": {**FAST, "lang": "es", "duration_factor": 1.8}})
    assert inside.status_code == 200
    np.testing.assert_array_equal(np.frombuffer(inside.content, "<i2"), got)


@pytest.mark.parametrize(("over", "status", "param", "words"), [
    ({"lang": "fr"}, 400, "lang", "allowed one of zh, en, ja, es, ar"),
    ({"duration_factor": 3.0}, 400, "duration_factor", "allowed a number from 0.5 to 2"),
    ({"lang": "en", "settings": {**FAST, "lang": "ja"}}, 400, "lang", "lang and settings.lang differ"),
    ({"model": "indextts-2.0"}, 404, "model", "the app has IndexTTS-2.5 loaded"),
    ({"model": "indextts-3"}, 404, "model", "indextts-2.0, indextts-2.5"),
])
def test_bad_fields_name_the_field(server: LocalServer, over: dict, status: int, param: str, words: str) -> None:
    body = {"model": "indextts2", "voice": "Alice", "input": SHORT, "response_format": "pcm", "settings": dict(FAST),
            **over}
    r = post(server, "/v1/audio/speech", body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_the_2_0_server_refuses_2_5_and_duration(tmp_path: Path, voices: VoiceCatalog) -> None:
    from tiny_models import tiny_model_dir

    two = Engine()
    two.load(tiny_model_dir(), device="cpu")
    with LocalServer(two, voices=voices, key=KEY, port=0) as srv:
        body = {"model": "indextts-2.5", "voice": "Alice", "input": SHORT, "response_format": "pcm",
                "settings": dict(FAST)}
        r = post(srv, "/v1/audio/speech", body)
        assert r.status_code == 404 and "the app has IndexTTS-2.0 loaded" in r.json()["error"]["message"]
        r = post(srv, "/v1/audio/speech", {**body, "model": "indextts2", "duration_factor": 1.5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "duration_factor"
        assert "1.0 with IndexTTS-2.0" in r.json()["error"]["message"]
