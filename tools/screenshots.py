"""Take the README screenshots from the real app under Xvfb.

    python tools/screenshots.py [--out assets/screenshots]

Starts a private Xvfb (unless ``--display`` is given), runs the real main window with the stand-in engine
in a throw-away user folder, generates a result, and grabs the main window and the Record dialog. The
screen is read with ``xwd`` (Debian package x11-apps) and written as PNG by a tiny encoder here, so no
imaging library is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def start_xvfb(size: str = "1280x900x24") -> tuple[subprocess.Popen, str]:
    if shutil.which("Xvfb") is None:
        raise SystemExit("Xvfb is not installed (Debian: apt-get install xvfb x11-apps).")
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


def read_xwd(data: bytes) -> np.ndarray:
    """Decode a 24/32-bit TrueColor ZPixmap XWD dump into an RGB uint8 array (H, W, 3)."""
    fields = struct.unpack(">25I", data[:100])
    header_size, _version, fmt, _depth, width, height = fields[:6]
    byte_order, bpp, bytes_per_line = fields[7], fields[11], fields[12]
    red_mask, green_mask, blue_mask, ncolors = fields[14], fields[15], fields[16], fields[19]
    if fmt != 2 or bpp != 32:
        raise ValueError(f"unsupported XWD (format {fmt}, {bpp} bits per pixel)")
    start = header_size + ncolors * 12
    raw = np.frombuffer(
        data, dtype="<u4" if byte_order == 0 else ">u4", count=height * bytes_per_line // 4, offset=start
    )
    pixels = raw.reshape(height, bytes_per_line // 4)[:, :width]

    def channel(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((pixels & mask) >> shift).astype(np.uint8)

    return np.stack([channel(red_mask), channel(green_mask), channel(blue_mask)], axis=-1)


def write_png(path: Path, rgb: np.ndarray) -> None:
    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def grab(widget, path: Path) -> None:
    """Screenshot of one toplevel window (the screen cropped to its rectangle)."""
    widget.update()
    dump = subprocess.run(
        ["xwd", "-root", "-silent", "-display", os.environ["DISPLAY"]], check=True, capture_output=True
    ).stdout
    screen = read_xwd(dump)
    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    w, h = widget.winfo_width(), widget.winfo_height()
    write_png(path, screen[y : y + h, x : x + w])
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

    from desktop.app import StudioApp
    from desktop.dirs import AppDirs
    from desktop.recorder import finish_take
    from desktop.standin import StandInEngine

    home = Path(tempfile.mkdtemp(prefix="indextts2-shots-"))
    try:
        dirs = AppDirs.under(home).ensure()
        clip = home / "narrator.wav"
        sf.write(str(clip), demo_voice(), 22050)
        shown: list = []
        root = tk.Tk()
        root.geometry("1240x860+0+0")
        app = StudioApp(
            root,
            StandInEngine(),
            dirs=dirs,
            dialog=lambda kind, **o: shown.append((kind, o)),
            check_device_on_start=False,
        )
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
        root.update()
        time.sleep(0.3)
        grab(root, out / "main-window.png")

        dialog = app.open_recorder()
        dialog.geometry("+80+80")
        wait(root, lambda: dialog.winfo_ismapped())
        dialog.name.set("Grandpa")
        dialog.show_take(finish_take(demo_voice(8.0, 48000), 48000))
        dialog.set_level(0.62)
        root.update()
        time.sleep(0.3)
        grab(dialog, out / "record-dialog.png")
        dialog.close()
        app.close()
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
