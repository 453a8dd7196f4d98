"""Projects with IndexTTS-2.5: a line's own ``lang`` / ``duration_factor`` are part of its take key (only that line
becomes stale) and reach the engine; the 2.0 take keys of lines without them are unchanged by the new fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from project_helpers import work_fixture  # noqa: F401 - the work fixture
from test_project import new_project
from tiny_models import single_thread, tiny_v25_model_dir  # noqa: F401 - fixture

from core.api import EngineError, SynthesisRequest
from core.engine import Engine
from core.project.model import _changed_settings
from core.project.render import render


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine()
    e.load(tiny_v25_model_dir(), device="cpu")
    return e


def test_line_language_and_duration(work: Path, engine: Engine, tmp_path: Path) -> None:
    with new_project(work, tmp_path / "p") as project:
        assert render(project, engine).rendered == 6
        line = project.lines[1]
        assert "lang" not in _changed_settings(project.effective_settings(line))  # old keys stay as they were
        project.set_line_settings(line.id, {"lang": "es", "duration_factor": 1.5})
        assert [project.status(ln) for ln in project.lines] == ["current", "stale"] + ["current"] * 4
        assert render(project, engine).rendered == 1
        settings = project.effective_settings(line)
        assert (settings.lang, settings.duration_factor) == ("es", 1.5)
        take, sr = sf.read(str(project.folder / line.active_take.file), dtype="int16")
        expected = engine.synthesize(SynthesisRequest(line.text, project.voice_clip(line), settings=settings)).audio
        np.testing.assert_array_equal(take, expected)
        project.set_line_settings(line.id, {"lang": "es"})  # the duration back to 1.0: stale again
        assert project.status(line) == "stale"
        with pytest.raises(EngineError, match="duration_factor = 3"):
            project.set_line_settings(line.id, {"duration_factor": 3.0})
        with pytest.raises(EngineError, match="lang = 'xx'"):
            project.set_line_settings(line.id, {"lang": "xx"})
