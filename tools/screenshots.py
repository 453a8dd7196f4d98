"""Take the README screenshots from the real app under Xvfb, in the light and the dark theme.

    python tools/screenshots.py [--out assets/screenshots]

Starts a private Xvfb (unless ``--display`` is given), runs the real main window with the stand-in engine in a
throw-away user folder, generates a result, and grabs the main window, the Record dialog, the model setup dialog
and the Projects view, each as ``<view>-light.png`` and ``<view>-dark.png``. The screen is read and the PNGs are
written with Pillow (``ImageGrab`` over the X display).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THEMES = ("light", "dark")
SCRIPT = """# Chapter 1: The lighthouse
NARRATOR: The storm had been building since noon.
MARA: Did you hear that? Something is out there.
TOM: It's only the wind, Mara. Go back to sleep.
NARRATOR: But the light on the rocks said otherwise.
MARA: Then we go and look. Together.
"""


def start_xvfb(size: str = "1280x900x24") -> tuple[subprocess.Popen, str]:
    if shutil.which("Xvfb") is None:
        raise SystemExit("Xvfb is not installed (Debian: apt-get install xvfb).")
    for n in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            proc = subprocess.Popen(
                ["Xvfb", f":{n}", "-screen", "0", size, "-dpi", "96", "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(100):
                if Path(f"/tmp/.X11-unix/X{n}").exists():
                    return proc, f":{n}"
                time.sleep(0.05)
            proc.kill()
    raise SystemExit("Could not start Xvfb.")


def grab(widget, path: Path) -> None:
    """Screenshot of one toplevel window (the screen cropped to its rectangle), written as PNG by Pillow."""
    from PIL import ImageGrab

    widget.update()
    time.sleep(0.2)
    widget.update()
    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    w, h = widget.winfo_width(), widget.winfo_height()
    image = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    print(f"wrote {path} ({w}x{h})")


def demo_voice(seconds: float = 6.0, rate: int = 22050) -> np.ndarray:
    """A voice-like synthetic take: gliding harmonics in syllables with pauses."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    syllables = np.clip(np.sin(2 * np.pi * 2.2 * t), 0, None) ** 0.6 * (np.sin(2 * np.pi * 0.25 * t) > -0.6)
    return (0.35 * tone * syllables).astype(np.float32)


def wait(root, condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for the app")
        root.update()
        time.sleep(0.01)


def take_screenshots(out: Path) -> None:
    import tkinter as tk

    import soundfile as sf

    from core import models
    from desktop.app import StudioApp
    from desktop.dirs import AppDirs
    from desktop.recorder import finish_take
    from desktop.setup_dialog import SetupDialog
    from desktop.standin import StandInEngine

    home = Path(tempfile.mkdtemp(prefix="indextts2-shots-"))
    try:
        dirs = AppDirs.under(home).ensure()
        clip = home / "narrator.wav"
        sf.write(str(clip), demo_voice(), 22050)
        shown: list = []
        root = tk.Tk()
        app = StudioApp(
            root,
            StandInEngine(),
            dirs=dirs,
            dialog=lambda kind, **o: shown.append((kind, o)),
            check_device_on_start=False,
            persist=False,
        )
        root.geometry("1240x700+0+0")
        for name in ("Narrator", "Grandpa (recorded)", "Podcast host"):
            app.library.add_file(name, clip)
        app.voice_panel.refresh()
        wait(root, lambda: app.engine.loaded and app.load_job is None)
        app.device_note.set("CPU only: this PyTorch build has no CUDA support.")
        app.text_panel.set_text(
            "Welcome back to the show! Today we talk about the quiet art of listening. "
            "It sounds simple, doesn't it? Yet most of us only wait for our turn to speak."
        )
        app.voice_panel.use_voice(app.library.find_by_name("Narrator"))
        app.emotion_panel.mode.set("vector")
        for i, v in enumerate((0.6, 0, 0, 0, 0, 0, 0.3, 0.4)):
            app.emotion_panel.sliders[i].set(v)
        app.advanced.set_settings({"seed": 1234})
        app.generate()
        wait(root, lambda: app.job is None)
        app.results.waveform.set_cursor(app.results.current.result.duration * 0.35)
        script = home / "lighthouse.script"
        script.write_text(SCRIPT, encoding="utf-8")
        app.projects.import_file(script)
        wait(root, lambda: app.projects.project is not None)
        app.status.set("Ready.")
        for theme in THEMES:
            app.apply_settings(replace(app.settings, theme=theme))  # as Settings → Appearance does
            app.projects.notebook.select(0)
            grab(root, out / f"main-window-{theme}.png")
            app.projects.notebook.select(app.projects.page)
            grab(root, out / f"projects-{theme}.png")
            app.projects.notebook.select(0)

            dialog = app.open_recorder()
            dialog.geometry("+80+80")
            wait(root, dialog.winfo_ismapped)
            dialog.name.set("Grandpa")
            dialog.show_take(finish_take(demo_voice(8.0, 48000), 48000))
            dialog.set_level(0.62)
            grab(dialog, out / f"record-dialog-{theme}.png")
            dialog.close()

            setup = SetupDialog(root, home / "models", worker=app.worker, on_done=lambda folder: None,
                                dialog=app.dialog, manifest=models.MANIFEST)
            setup.geometry("+60+40")
            wait(root, setup.winfo_ismapped)
            grab(setup, out / f"model-setup-{theme}.png")
            setup.close()
        app.close()
        errors = [o.get("message") for kind, o in shown if kind == "error"]
        for message in dict.fromkeys(errors):  # e.g. no microphone on this machine: the shots are still taken
            print(f"note: the app said: {message}", file=sys.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("--display", help="use this X display instead of starting Xvfb")
    args = parser.parse_args()
    xvfb = None
    if args.display:
        os.environ["DISPLAY"] = args.display
    else:
        xvfb, os.environ["DISPLAY"] = start_xvfb()
    try:
        take_screenshots(args.out)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
