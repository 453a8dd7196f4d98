"""Shared fixtures: the reference data root, and for the desktop GUI tests:

* ``display``: a real X display; starts a private Xvfb when DISPLAY is unset.
* ``audio_server``: a PulseAudio daemon with a null sink (its monitor is the microphone) unless one runs.
* ``studio``: the real main window with the stand-in engine, user folders in tmp_path, dialogs captured.

The helpers they use (make_studio, close_studio, wait_until, pump, write_tone) live in ``gui_helpers``.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gui_helpers import Studio, close_studio, ensure_audio_server, ensure_display, make_studio  # noqa: E402
from reference import reference_root  # noqa: E402


@pytest.fixture(scope="session")
def refroot() -> Path:
    return reference_root()


@pytest.fixture(scope="session")
def display() -> str:
    return ensure_display()


@pytest.fixture(scope="session")
def audio_server() -> None:
    ensure_audio_server()


@pytest.fixture
def studio(display, audio_server, tmp_path) -> Iterator[Studio]:
    s = make_studio(tmp_path / "home")
    yield s
    close_studio(s)
