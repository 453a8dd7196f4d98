"""Shared by the project tests: the command line as a subprocess, the fast tiny-model settings, and the expected
timeline computed from project.json by the rules stated in the issue (not by core.project.export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny_models import tiny_model_dir, write_clip

REPO = Path(__file__).resolve().parent.parent
FAST = ["--greedy", "--max-mel-tokens", "8", "--diffusion-steps", "2"]
SR = 22050

SCRIPT = """# The Meeting
Alice: Hello there, Bob.
[Bob] Hi Alice. Good to see you.
Alice: Shall we begin?

# The Plan
Bob: Yes. First the map.
[Alice] Then the boat.
Bob: And then we wait.
"""


def env(work: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS_")}
    e["HF_HOME"] = str(work / "hf_home")
    e["XDG_CACHE_HOME"] = str(work / "xdg_cache")
    e["OMP_NUM_THREADS"] = "1"
    return e


def cli(work: Path, *args: str, prefix: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, str(REPO / "main.py"), "project", *args]
    return subprocess.run(cmd, cwd=work, env=env(work), capture_output=True, text=True, timeout=timeout)


def render_args(project: Path, work: Path) -> list[str]:
    return ["render", str(project), "--model-dir", str(tiny_model_dir()), "--device", "cpu", "--cache-dir",
            str(work / "voice_cache"), "--quiet"]


def read_json(project: Path) -> dict:
    return json.loads((project / "project.json").read_text(encoding="utf-8"))


def active(line: dict) -> dict:
    return next(t for t in line["takes"] if t["n"] == line["active"])


def expected_starts(project: Path) -> tuple[list[int], int]:
    """(start sample of every line, total samples): each line follows the previous one and its pause; a timed
    line starts at its cue (or after an overrunning predecessor) and fills its cue."""
    pos, starts = 0, []
    for line in read_json(project)["lines"]:
        take = active(line)
        start, span = pos, take["samples"]
        if line.get("start_ms") is not None:
            start = max(pos, round(line["start_ms"] * SR / 1000))
            span = max(span, round((line["end_ms"] - line["start_ms"]) * SR / 1000))
        starts.append(start)
        pos = start + span + round(line["pause_ms"] * SR / 1000)
    return starts, pos


def take_audio(project: Path, line: dict) -> np.ndarray:
    audio, sr = sf.read(str(project / active(line)["file"]), dtype="int16")
    assert sr == SR
    return audio


@pytest.fixture(scope="module", name="work")
def work_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two voice clips, a file that is not audio and the two-speaker script."""
    root = tmp_path_factory.mktemp("project")
    write_clip(root / "alice.wav", 1.2, 170.0, seed=3)
    write_clip(root / "bob.wav", 1.0, 260.0, seed=4)
    (root / "corrupt.wav").write_text("this is a text file, not audio\n", encoding="utf-8")
    (root / "script.txt").write_text(SCRIPT, encoding="utf-8")
    return root


@pytest.fixture(scope="module", name="engine")
def engine_fixture(work: Path):
    """The tiny engine in this process, sharing the subprocesses' voice cache."""
    from core.engine import Engine

    e = Engine(cache_dir=work / "voice_cache")
    e.load(tiny_model_dir(), device="cpu")
    return e
