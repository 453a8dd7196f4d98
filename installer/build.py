"""Build the one-folder app with PyInstaller, then (optionally) self-test it and zip it.

    python installer/build.py                    # -> dist/IndexTTS2Desktop/
    python installer/build.py --selftest --zip   # also run the built app's --selftest, then zip the folder

Needs the build extra (``pip install -e .[build]``). Works on Windows, Linux and macOS; on Linux the
self-test needs a display (run it under ``xvfb-run``) and the system's PortAudio (``libportaudio2``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "installer" / "indextts2_desktop.spec"
NAME = "IndexTTS2Desktop"


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def executable(bundle: Path, console: bool = True) -> Path:
    """The program to run for a self-test: on Windows the console twin (its output is visible)."""
    if sys.platform == "win32":
        return bundle / ("indextts2.exe" if console else f"{NAME}.exe")
    return bundle / NAME


def build(dist: Path, work: Path, clean: bool = False) -> Path:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        sys.exit("PyInstaller is not installed: run  pip install -e .[build]  and try again.")
    if not (ROOT / "assets" / "icon.ico").is_file():
        subprocess.run([sys.executable, str(ROOT / "installer" / "make_icon.py")], check=True)
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    if clean:
        cmd.insert(3, "--clean")
    print("[build]", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT)
    bundle = dist / NAME
    print(f"[build] built {bundle} in {time.monotonic() - t0:.0f} s, {folder_size(bundle) / 2**20:.0f} MiB", flush=True)
    return bundle


def selftest(bundle: Path, report: Path) -> int:
    exe = executable(bundle)
    print(f"[build] self-test: {exe} --selftest", flush=True)
    t0 = time.monotonic()
    code = subprocess.run([str(exe), "--selftest", "--selftest-report", str(report)], cwd=bundle.parent).returncode
    ok = report.is_file() and json.loads(report.read_text(encoding="utf-8")).get("ok") is True
    print(f"[build] self-test exit code {code}, report ok={ok}, {time.monotonic() - t0:.1f} s", flush=True)
    return 0 if code == 0 and ok else 1


def make_zip(bundle: Path) -> Path:
    base = bundle.parent / f"{NAME}-{sys.platform}"
    archive = Path(shutil.make_archive(str(base), "zip", root_dir=bundle.parent, base_dir=bundle.name))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_suffix(".zip.sha256").write_text(f"{digest}  {archive.name}\n", encoding="utf-8")
    print(f"[build] {archive} ({archive.stat().st_size / 2**20:.0f} MiB) sha256 {digest}", flush=True)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="PyInstaller work folder (default: build/)")
    parser.add_argument("--clean", action="store_true", help="discard PyInstaller's cache first")
    parser.add_argument("--selftest", action="store_true", help="run the built app's --selftest")
    parser.add_argument("--zip", action="store_true", help="zip the folder (+ .sha256) for release")
    opts = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    bundle = build(opts.dist.resolve(), opts.work.resolve(), opts.clean)
    if opts.selftest and selftest(bundle, opts.dist.resolve() / "selftest-report.json") != 0:
        print("[build] the built app is NOT healthy; see the self-test output above", file=sys.stderr)
        return 1
    if opts.zip:
        make_zip(bundle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
