"""Helpers for the desktop GUI tests (not a test module; the fixtures built on them are in conftest.py).

* :func:`ensure_display`: a real X display; starts a private Xvfb when DISPLAY is unset.
* :func:`ensure_audio_server`: a PulseAudio daemon with a null sink (its monitor is the microphone) unless one runs.
* :func:`make_studio` / :func:`close_studio`: the real main window with user folders under a folder, dialogs captured.
* :func:`wait_until`, :func:`pump`, :func:`write_tone`, :class:`FakeDialogs`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import time
import tkinter as tk
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

_STARTED: dict[str, object] = {}
_SCREENS: dict[str, subprocess.Popen] = {}  # size -> Xvfb of screen(), kept until the process exits


def _stop_started() -> None:
    procs = [_STARTED.pop("xvfb", None), *_SCREENS.values()]
    _SCREENS.clear()
    for proc in procs:
        if isinstance(proc, subprocess.Popen):
            proc.terminate()
            proc.wait(5)
    env = _STARTED.pop("pulse_env", None)
    if env is not None:
        subprocess.run(["pulseaudio", "--kill"], env=env, check=False, capture_output=True)
        shutil.rmtree(env["XDG_RUNTIME_DIR"], ignore_errors=True)


atexit.register(_stop_started)


def start_xvfb(size: str = "1280x900") -> tuple[subprocess.Popen, str]:
    """A private Xvfb screen of ``size`` (96 dpi: 100 % scaling); the caller stops the process."""
    assert shutil.which("Xvfb"), "Xvfb is not installed (Debian package: xvfb); the GUI tests need a display"
    for n in range(99, 160):
        if Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists():
            continue
        proc = subprocess.Popen(
            ["Xvfb", f":{n}", "-screen", "0", f"{size}x24", "-dpi", "96", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                return proc, f":{n}"
            if proc.poll() is not None:
                break
            time.sleep(0.025)
        proc.kill()
    raise AssertionError("could not start Xvfb")


def screen(size: str) -> str:
    """The X display of a private Xvfb screen of ``size`` (started once per test process, stopped at its exit:
    Tk keeps its connection to every display it used, and a display gone under it ends the process)."""
    if size not in _SCREENS:
        _SCREENS[size], display = start_xvfb(size)
        _SCREENS[size].display = display  # type: ignore[attr-defined]
    return str(_SCREENS[size].display)  # type: ignore[attr-defined]


def ensure_display() -> str:
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    proc, display = start_xvfb()
    _STARTED["xvfb"] = proc
    os.environ["DISPLAY"] = display
    return display


def simulate_drop(widget: tk.Misc, paths: list[Path]) -> str:
    """Drop ``paths`` on ``widget`` through tkDnD's own event path (enter, position at the widget's centre, drop),
    as its X11 layer does for a drop from a file manager; returns the action the target answered."""
    t = widget.tk
    widget.update()
    x = widget.winfo_rootx() + widget.winfo_width() // 2
    y = widget.winfo_rooty() + widget.winfo_height() // 2
    under = widget.winfo_containing(x, y) or widget
    data = tuple(str(p) for p in paths)
    t.call("tkdnd::generic::HandleEnter", "", "file-manager", ("text/uri-list",), ("text/uri-list",), ("copy",), "")
    t.call("tkdnd::generic::SetDroppedData", data)
    t.call("tkdnd::generic::HandlePosition", str(under), "file-manager", "", x, y)
    t.call("tkdnd::generic::SetDroppedData", data)
    return str(t.call("tkdnd::generic::HandleDrop", str(under), "file-manager", "", x, y, 0))


def _pactl_ok(env: dict) -> bool:
    try:
        return subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_audio_server() -> None:
    """PulseAudio with a null sink 'virt_out'; PortAudio reaches it through ALSA's pulse plugin."""
    if _pactl_ok(dict(os.environ)):
        return
    _start_pulseaudio()
    # PortAudio lists devices once, when sounddevice is imported; if an earlier test imported it before the
    # server ran, it saw no usable device. Re-scan now (no stream is open at fixture time).
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


def _start_pulseaudio() -> None:
    assert shutil.which("pulseaudio"), (
        "pulseaudio is not installed (Debian: pulseaudio pulseaudio-utils libasound2-plugins)"
    )
    runtime = Path(f"/tmp/indextts2-test-pulse-{os.getpid()}")
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    env = dict(os.environ)
    subprocess.run(
        [
            "pulseaudio",
            "--daemonize",
            "--exit-idle-time=-1",
            "-n",
            "--load=module-null-sink sink_name=virt_out",
            "--load=module-native-protocol-unix",
            f"--log-target=file:{runtime}/pulse.log",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=20,
    )
    for _ in range(100):
        if _pactl_ok(env):
            _STARTED["pulse_env"] = env
            return
        time.sleep(0.05)
    raise AssertionError("PulseAudio did not come up")


class FakeDialogs:
    """The injectable dialog function: records every call, answers from queued replies."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.answers: dict[str, list] = {}

    def answer(self, kind: str, *values) -> None:
        self.answers.setdefault(kind, []).extend(values)

    def __call__(self, kind: str, **opts):
        self.calls.append((kind, opts))
        queue = self.answers.get(kind)
        if queue:
            return queue.pop(0)
        return False if kind == "yesno" else None

    def messages(self, *kinds: str) -> list[str]:
        kinds = kinds or ("error",)
        return [o.get("message", "") for k, o in self.calls if k in kinds]

    def clear(self) -> None:
        self.calls.clear()


def wait_until(root: tk.Misc, condition, timeout: float = 15.0, step: float = 0.005) -> float:
    """Pump the Tk event loop until ``condition()``; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        root.update()
        time.sleep(step)
    return time.monotonic() - start


def pump(root: tk.Misc, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        root.update()
        time.sleep(0.005)


def write_tone(path: Path, seconds: float = 4.0, rate: int = 22050, freq: float = 220.0, amp: float = 0.4) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


@dataclass
class Studio:
    app: object
    root: tk.Tk
    dialogs: FakeDialogs
    home: Path
    voice: Path

    def generate_and_wait(self, timeout: float = 20.0):
        job = self.app.generate()
        assert job is not None, f"generation did not start: {self.dialogs.messages()}"
        wait_until(self.root, lambda: self.app.job is None, timeout)
        return job


def make_studio(home: Path, engine=None, screen: str | None = None, **kwargs) -> Studio:
    """The studio on the test display, or on the X display ``screen`` (e.g. one of :func:`start_xvfb`)."""
    from desktop.app import StudioApp
    from desktop.dirs import AppDirs
    from desktop.standin import StandInEngine

    dialogs = FakeDialogs()
    root = tk.Tk(screenName=screen)
    if screen is not None and os.environ.get("DISPLAY"):
        os.putenv("DISPLAY", os.environ["DISPLAY"])  # Tk set the process's DISPLAY to ``screen``: later Tk() too
    root.geometry("1240x860+0+0")
    app = StudioApp(
        root,
        engine or StandInEngine(step_seconds=0.02),
        dirs=AppDirs.under(home),
        dialog=dialogs,
        check_device_on_start=False,
        **kwargs,
    )
    if kwargs.get("autoload", True) and not app.first_run_visible:
        wait_until(root, lambda: app.load_job is None)
    voice = home / "voice.wav"
    if not voice.exists():
        write_tone(voice)
    return Studio(app=app, root=root, dialogs=dialogs, home=home, voice=voice)


def close_studio(studio: Studio) -> None:
    unexpected = [o for k, o in studio.dialogs.calls if o.get("title") == "Unexpected error"]
    try:
        if studio.root.winfo_exists():
            studio.app.close()
    except tk.TclError:
        pass
    assert not unexpected, f"a Tk callback raised: {unexpected}"




def silent_engine(**kwargs):
    """A stand-in whose model 'produces no speech' for every text: the engine's NO_SPEECH error."""
    from desktop.standin import StandInEngine

    class Silent(StandInEngine):
        def segments_for(self, request):
            return []

    return Silent(**kwargs)


def warning_engine(warning: str, **kwargs):
    """A stand-in whose results carry ``warning`` (as the real engine's 'reached the limit of N speech tokens')."""
    from desktop.standin import StandInEngine

    class Warning(StandInEngine):
        def warnings_for(self, request, segments):
            return [warning]

    return Warning(**kwargs)
