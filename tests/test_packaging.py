"""The packaged app: ``--selftest`` from source, and the PyInstaller one-folder bundle built from
``installer/indextts2_desktop.spec`` whose own ``--selftest`` must pass, run from the bundle (not from
source) under Xvfb, from a folder whose path has spaces and non-ASCII characters.

The bundle build takes a few minutes (about 2.5 min on 2 cores); it runs once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "IndexTTS2Desktop"
EXPECTED_CHECKS = {
    "imports", "native libraries", "torch", "text front end", "audio files", "tiny models",
    "tiny synthesis (emotion: speaker)", "tiny synthesis (emotion: vector)", "model folder", "main window",
}


def _display_prefix() -> list[str]:
    """Run under the current display, else under a fresh Xvfb (xvfb-run); no display at all is a failure."""
    if os.environ.get("DISPLAY"):
        return []
    xvfb_run = shutil.which("xvfb-run")
    assert xvfb_run, "no DISPLAY and no xvfb-run: install xvfb (.ci/run does) to test the main window"
    return [xvfb_run, "-a", "-s", "-screen 0 1280x800x24"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A clean user profile: no model folder, no settings; the models must not be needed for a healthy app.
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1")
    env.pop("INDEXTTS_MODEL_DIR", None)
    return env


def _run_selftest(cmd: list[str], report: Path, home: Path, cwd: Path) -> tuple[subprocess.CompletedProcess, dict]:
    full = _display_prefix() + cmd + ["--selftest", "--selftest-report", str(report)]
    proc = subprocess.run(full, capture_output=True, text=True, env=_env(home), cwd=cwd, timeout=300)
    assert report.is_file(), f"no self-test report written; output:\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(report.read_text(encoding="utf-8"))


def _explain(proc: subprocess.CompletedProcess, data: dict) -> str:
    failed = [f"{c['name']}: {c['detail']}" for c in data["checks"] if not c["ok"]]
    return "self-test failed:\n  " + "\n  ".join(failed) + f"\n--- output ---\n{proc.stderr[-4000:]}"


@pytest.mark.gui
def test_selftest_from_source(tmp_path: Path) -> None:
    proc, data = _run_selftest([sys.executable, str(ROOT / "main.py")], tmp_path / "report.json", tmp_path, tmp_path)
    assert {c["name"] for c in data["checks"]} == EXPECTED_CHECKS
    assert data["frozen"] is False
    assert proc.returncode == 0 and data["ok"] is True, _explain(proc, data)


def test_selftest_reports_a_broken_install(tmp_path: Path) -> None:
    """A missing core module makes the self-test fail (exit 1, named in the report), not pass silently."""
    # ``sys.modules[name] = None`` makes ``import name`` fail, as a file missing from a bundle would; this works
    # the same from a source tree, an editable install or a wheel.
    script = ("import sys, logging; logging.basicConfig(level=logging.INFO); sys.modules['core.bigvgan'] = None; "
              "from core.selftest import run_selftest; "
              f"sys.exit(run_selftest(report_path={str(tmp_path / 'r.json')!r}))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path),
                          timeout=300)
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    checks = {c["name"]: c for c in data["checks"]}
    assert proc.returncode == 1 and data["ok"] is False
    assert not checks["imports"]["ok"] and "core.bigvgan" in checks["imports"]["detail"]
    assert not checks["tiny models"]["ok"]


@pytest.mark.parametrize("missing", ["av", "fastapi", "uvicorn", "tiktoken", "fugashi", "unidic_lite"])
def test_selftest_needs_the_projects_server_and_v25_libraries(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle without PyAV, FastAPI, uvicorn, tiktoken or fugashi (+ dictionary) fails its native-library check."""
    from core import selftest

    monkeypatch.setitem(sys.modules, missing, None)  # ``import missing`` now fails, as a file missing from a bundle
    with pytest.raises(selftest._Failed, match=rf"cannot load {missing} \(ModuleNotFoundError"):
        selftest.check_native()


@pytest.mark.parametrize("missing", ["core.project", "core.project.export", "core.server", "core.server.app"])
def test_selftest_needs_the_project_and_server_packages(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import selftest

    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(selftest._Failed, match=rf"cannot import {missing} \(ModuleNotFoundError"):
        selftest.check_imports()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the one-folder app with the project's spec into a path with spaces and non-ASCII characters."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.fail("PyInstaller is not installed: pip install -e .[build] (./launch.sh --test installs it)")
    base = tmp_path_factory.mktemp("pyi")
    dist = base / "dist with space 测试"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "installer" / "build.py"), "--dist", str(dist), "--work", str(base / "work")],
        capture_output=True, text=True, cwd=ROOT, timeout=1500,
    )
    assert proc.returncode == 0, f"PyInstaller build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    folder = dist / NAME
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"\nbundle built in {time.monotonic() - t0:.0f} s: {folder} ({size / 2**20:.0f} MiB)")
    shutil.rmtree(base / "work", ignore_errors=True)
    return folder


@pytest.mark.gui
@pytest.mark.timeout(1800)
def test_bundle_selftest_passes(bundle: Path, tmp_path: Path) -> None:
    exe = bundle / (f"{NAME}.exe" if sys.platform == "win32" else NAME)
    assert exe.is_file()
    # Run from an unrelated folder with the source tree out of reach: the bundle must carry everything.
    proc, data = _run_selftest([str(exe)], tmp_path / "report.json", tmp_path, tmp_path)
    assert data["frozen"] is True, "the self-test did not run inside the bundle"
    assert {c["name"] for c in data["checks"]} == EXPECTED_CHECKS
    assert proc.returncode == 0 and data["ok"] is True, _explain(proc, data)


def test_bundle_contents(bundle: Path) -> None:
    internal = bundle / "_internal"
    fst = sorted(p.name for p in (internal / "core" / "assets" / "fst").glob("*.fst"))
    source_fst = sorted(p.name for p in (ROOT / "core" / "assets" / "fst").glob("*.fst"))
    assert fst == source_fst and fst, f"FST grammars in the bundle: {fst}"
    assert (internal / "assets" / "icon.png").is_file()
    assert any(internal.glob("_tcl_data")) and any(internal.glob("_tk_data")), "Tcl/Tk data not collected"
    assert any(internal.glob("_soundfile_data/*")) or any(internal.glob("**/libsndfile*")), "libsndfile not collected"
    # the studio's theme and drag and drop travel with the app
    assert (internal / "sv_ttk" / "sv.tcl").is_file() and any((internal / "sv_ttk").rglob("*.png")), "sv-ttk missing"
    assert any((internal / "tkinterdnd2" / "tkdnd").rglob("*tkdnd*")), "tkDnD (tkinterdnd2) not collected"
    # Models are not bundled: no checkpoint-like files at all.
    weights = [p for p in bundle.rglob("*") if p.suffix in (".pth", ".safetensors", ".ckpt") or p.name == "bpe.model"]
    assert not weights, f"model files in the bundle: {weights[:5]}"


def test_bundle_command_line(bundle: Path, tmp_path: Path) -> None:
    exe = bundle / (f"{NAME}.exe" if sys.platform == "win32" else NAME)
    empty = tmp_path / "no models here"
    empty.mkdir()
    proc = subprocess.run([str(exe), "models", "check", "--dir", str(empty)], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=300)
    assert proc.returncode != 0, "an empty model folder was reported complete"
    assert "config.yaml" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
