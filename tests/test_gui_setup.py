"""The first-run model setup dialog under Xvfb, downloading from a loopback server that answers like the HF hub.

The server serves the tiny reference checkpoints in the release layout (``tiny_sources``/``TINY_MANIFEST`` from
tiny_models); the dialog runs the real downloader in a worker thread and the tests drive its real widgets.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import pytest
from gui_helpers import close_studio, make_studio, wait_until
from hub_server import HubServer
from tiny_models import TINY_MANIFEST, serve_all, tiny_sources

from core import models
from desktop.setup_dialog import SetupDialog, human_duration, human_size, setup_models
from desktop.worker import Worker

MAIN = models.MAIN_REPO


@pytest.fixture(autouse=True)
def isolated_hf(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # never reuse/touch the user's HF cache
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("INDEXTTS_MODEL_DIR", raising=False)


def loopback_hub() -> HubServer:
    return HubServer()


def subset(*locals_: str) -> tuple[models.ModelFile, ...]:
    return tuple(m for m in TINY_MANIFEST if m.local in locals_)


def open_setup(studio) -> SetupDialog:
    studio.app.first_run.setup_button.invoke()
    found = [w for w in studio.root.winfo_children() if isinstance(w, SetupDialog)]
    assert len(found) == 1, "the setup button did not open exactly one setup dialog"
    return found[0]


def rows(dlg: SetupDialog) -> dict[str, str]:
    return {iid: dlg.tree.set(iid, "state") for iid in dlg.tree.get_children()}


def test_complete_download_sets_the_folder_and_the_real_engine_loads(display, tmp_path, monkeypatch):
    from desktop.app import make_engine
    from desktop.dirs import AppDirs

    home = tmp_path / "home"
    folder = tmp_path / "models"
    folder.mkdir()
    engine, _ = make_engine(None, False, AppDirs.under(home))
    with loopback_hub() as hub:
        serve_all(hub)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # the mirror field defaults to $HF_ENDPOINT
        studio = make_studio(
            home,
            engine=engine,
            model_dir=folder,
            on_setup_models=functools.partial(setup_models, manifest=TINY_MANIFEST),
        )
        app, root = studio.app, studio.root
        try:
            wait_until(root, lambda: app.first_run_visible, timeout=60)
            dlg = open_setup(studio)
            assert open_setup(studio) is dlg  # pressing again raises the same dialog
            assert dlg.source.get() == "mirror" and dlg.endpoint.get() == hub.endpoint
            assert str(dlg.endpoint_entry.cget("state")) == "normal"
            assert rows(dlg) == {m.local: "missing" for m in TINY_MANIFEST}
            assert dlg.folder.get() == str(folder) and f"{len(TINY_MANIFEST)} file(s)" in dlg.summary.get()
            assert str(dlg.start_button.cget("text")) == "Download"

            overall: list[float] = []
            labels: list[str] = []
            dlg.overall_progress.trace_add("write", lambda *a: overall.append(dlg.overall_progress.get()))
            dlg.file_label.trace_add("write", lambda *a: labels.append(dlg.file_label.get()))
            dlg.start_button.invoke()
            assert dlg.phase.get() == "downloading"
            assert str(dlg.start_button.cget("state")) == "disabled"
            assert str(dlg.cancel_button.cget("state")) == "normal"
            assert str(dlg.folder_entry.cget("state")) == "disabled"
            wait_until(root, lambda: not dlg.winfo_exists(), timeout=60)

            assert dlg.phase.get() == "done" and dlg.job is None
            for local, src in tiny_sources().items():
                assert (folder / local).read_bytes() == src.read_bytes(), local
            assert not (folder / ".download").exists()
            n = len(TINY_MANIFEST)
            for i, m in enumerate(TINY_MANIFEST):
                assert f"File {i + 1} of {n}: {m.local} ({m.what})" in labels
            assert overall[-1] == 100.0 and overall == sorted(overall)
            assert len({v for v in overall if 0 < v < 100}) >= n - 1  # each finished file moved the overall bar
            # bytes on the overall line equal the sum of the tiny files
            total = sum(p.stat().st_size for p in tiny_sources().values())
            assert dlg.overall_bytes.get() == f"{human_size(total)} of {human_size(total)}"

            assert app.model_dir == folder
            assert json.loads((home / "config" / "settings.json").read_text())["model_dir"] == str(folder)
            wait_until(root, lambda: app.engine.loaded and app.load_job is None, timeout=60)
            assert not app.first_run_visible and app.studio.winfo_ismapped()
            assert str(app.generate_button.cget("state")) == "normal"
            assert studio.dialogs.messages() == []
        finally:
            close_studio(studio)


def test_cancel_mid_download_leaves_no_half_file_and_retry_finishes(display, tmp_path):
    folder = tmp_path / "models"  # does not exist yet: the first-run screen, the download creates it
    manifest = subset("config.yaml", "gpt.pth", "feat1.pt")
    with loopback_hub() as hub:
        serve_all(hub)
        gate = threading.Event()
        hub.slow[(MAIN, "gpt.pth")] = gate  # gpt.pth trickles until the gate opens
        studio = make_studio(
            tmp_path / "home",
            model_dir=folder,
            on_setup_models=functools.partial(setup_models, manifest=manifest, endpoint=hub.endpoint),
        )
        app, root = studio.app, studio.root
        try:
            assert app.first_run_visible
            dlg = open_setup(studio)
            assert dlg.source.get() == "mirror" and dlg.endpoint.get() == hub.endpoint
            dlg.start_button.invoke()
            wait_until(root, lambda: dlg.file_done.get("gpt.pth", 0) > 0, timeout=30)
            assert dlg.file_label.get() == "File 2 of 3: gpt.pth (GPT (UnifiedVoice v2))"
            assert rows(dlg)["config.yaml"] == "done" and rows(dlg)["gpt.pth"] == "fetching"
            assert 0 < dlg.file_progress.get() < 100
            dlg.cancel_button.invoke()
            assert dlg.phase.get() == "cancelling" and str(dlg.cancel_button.cget("state")) == "disabled"
            gate.set()
            wait_until(root, lambda: dlg.phase.get() == "cancelled", timeout=30)

            assert not (folder / "gpt.pth").exists() and not (folder / "feat1.pt").exists()
            assert (folder / "config.yaml").read_bytes() == tiny_sources()["config.yaml"].read_bytes()
            assert "cancelled" in dlg.error_message.get() and "Retry" in dlg.error_message.get()
            assert dlg.error_frame.winfo_manager() == "pack"
            assert str(dlg.start_button.cget("text")) == "Retry" and str(dlg.start_button.cget("state")) == "normal"
            assert str(dlg.cancel_button.cget("state")) == "disabled"
            assert rows(dlg)["gpt.pth"] == "stopped"
            gpt_size = tiny_sources()["gpt.pth"].stat().st_size  # from the server's answer (no size in the manifest)
            assert dlg.tree.set("gpt.pth", "size") == human_size(gpt_size)
            assert app.first_run_visible and app.model_dir == folder

            del hub.slow[(MAIN, "gpt.pth")]
            dlg.start_button.invoke()
            assert dlg.error_frame.winfo_manager() == ""  # the old message goes away on retry
            wait_until(root, lambda: not dlg.winfo_exists(), timeout=60)
            for m in manifest:
                assert (folder / m.local).read_bytes() == tiny_sources()[m.local].read_bytes(), m.local
            wait_until(root, lambda: app.engine.loaded and app.load_job is None)
            assert not app.first_run_visible and app.model_dir == folder
        finally:
            close_studio(studio)


def test_server_error_shows_a_clear_message_and_retry_succeeds(display, tmp_path):
    folder = tmp_path / "models"
    manifest = subset("config.yaml", "bpe.model", "feat2.pt")
    with loopback_hub() as hub:
        serve_all(hub)
        hub.fail_next[(MAIN, "feat2.pt")] = ["500"] * 10
        studio = make_studio(
            tmp_path / "home",
            model_dir=folder,
            on_setup_models=functools.partial(setup_models, manifest=manifest),
        )
        app, root = studio.app, studio.root
        try:
            dlg = open_setup(studio)
            assert dlg.source.get() == "hf"  # no $HF_ENDPOINT: HuggingFace, the mirror field is off
            assert str(dlg.endpoint_entry.cget("state")) == "disabled"
            # a mirror without an address is refused with a message, nothing starts
            dlg.source_buttons["mirror"].invoke()
            dlg.start_button.invoke()
            assert dlg.job is None and dlg.phase.get() == "error"
            assert "mirror's address" in dlg.error_message.get()
            dlg.endpoint.set(hub.endpoint + "/")

            dlg.start_button.invoke()
            wait_until(root, lambda: dlg.phase.get() == "error" and dlg.job is None, timeout=60)
            message = dlg.error_message.get()
            assert "feat2.pt" in message and "HTTP 500" in message and MAIN in message and "\n" not in message
            assert "Traceback" not in message
            assert str(dlg.details_button.cget("text")) == "Details \u25b8" and dlg.details.winfo_manager() == ""
            dlg.details_button.invoke()
            assert dlg.details.winfo_manager() == "pack"
            assert "ModelSetupError" in dlg.details.get("1.0", "end")
            assert (folder / "config.yaml").is_file() and (folder / "bpe.model").is_file()
            assert not (folder / "feat2.pt").exists()
            assert str(dlg.start_button.cget("text")) == "Retry" and str(dlg.start_button.cget("state")) == "normal"
            assert rows(dlg)["feat2.pt"] == "stopped"
            assert studio.dialogs.messages() == []  # the error is shown in the dialog, not as a popup

            hub.fail_next.clear()  # the server recovers
            dlg.start_button.invoke()
            wait_until(root, lambda: not dlg.winfo_exists(), timeout=60)
            assert (folder / "feat2.pt").read_bytes() == tiny_sources()["feat2.pt"].read_bytes()
            assert app.model_dir == folder
            wait_until(root, lambda: app.engine.loaded and app.load_job is None)
            assert not app.first_run_visible
        finally:
            close_studio(studio)


def test_complete_folder_is_used_without_network(display, tmp_path):
    """Nothing missing: the dialog says so, and its button uses the folder without any request."""
    import shutil

    folder = tmp_path / "models"
    manifest = subset("config.yaml", "bpe.model")
    for m in manifest:
        (folder / m.local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_sources()[m.local], folder / m.local)
    used: list[Path] = []
    answers = [str(folder)]
    root = __import__("tkinter").Tk()
    try:
        worker = Worker(root)
        dlg = SetupDialog(root, tmp_path / "empty", worker=worker, on_done=used.append, manifest=manifest,
                          endpoint="http://127.0.0.1:9", dialog=lambda kind, **o: answers.pop(0))
        assert rows(dlg) == {"config.yaml": "missing", "bpe.model": "missing"}
        assert str(dlg.start_button.cget("text")) == "Download"
        dlg.change_button.invoke()  # the folder that already holds the files
        assert dlg.folder.get() == str(folder) and answers == []
        assert rows(dlg) == {} and "Every model file is present" in dlg.summary.get()
        assert str(dlg.start_button.cget("text")) == "Use this folder"
        dlg.start_button.invoke()
        assert used == [folder] and not dlg.winfo_exists()
    finally:
        root.destroy()


def test_speed_and_time_left(display, tmp_path):
    from desktop.setup_dialog import PlannedFile

    root = __import__("tkinter").Tk()
    try:
        dlg = SetupDialog(root, tmp_path / "m", worker=Worker(root), on_done=lambda p: None, manifest=TINY_MANIFEST)
        clock = [100.0]
        dlg.clock = lambda: clock[0]
        dlg._message("plan", [PlannedFile("gpt.pth", "GPT", 10_000_000), PlannedFile("s2mel.pth", "s2mel", None)])
        dlg._message("file", (0, 2, "gpt.pth", "GPT"))
        dlg._message("bytes", ("gpt.pth", 2_000_000, 10_000_000))  # resumed: bytes on disk are not speed
        assert dlg.speed_label.get() == "" and dlg.file_progress.get() == 20.0
        assert dlg.overall_bytes.get() == "2.0 MB of at least 10.0 MB"  # s2mel's size is not known yet
        clock[0] += 2
        dlg._message("bytes", ("gpt.pth", 10_000_000, 10_000_000))
        assert dlg.speed_label.get() == "4.0 MB/s"
        dlg._message("file", (1, 2, "s2mel.pth", "s2mel"))
        clock[0] += 1
        dlg._message("bytes", ("s2mel.pth", 4_000_000, 30_000_000))
        assert dlg.file_bytes.get() == "4.0 MB of 30.0 MB"
        assert dlg.overall_progress.get() == 35.0 and dlg.overall_bytes.get() == "14.0 MB of 40.0 MB"
        # samples restart with each file (its first bytes may be resumed ones): the previous rate stays
        assert dlg.speed_label.get() == "4.0 MB/s \u00b7 about 6 s left"
        clock[0] += 4
        dlg._message("bytes", ("s2mel.pth", 12_000_000, 30_000_000))
        assert dlg.speed_label.get() == "2.0 MB/s \u00b7 about 9 s left"
        clock[0] += 2
        dlg._tick()
        assert dlg.speed_label.get() == "2.0 MB/s \u00b7 about 9 s left"
        clock[0] += 2  # nothing for 4 s: the rate is stale
        dlg._tick()
        assert dlg.speed_label.get() == "waiting for the server\u2026"
        assert human_duration(75) == "1 min 15 s" and human_duration(3 * 3600 + 120) == "3 h 02 min"
        assert human_size(2_322_063_736) == "2.32 GB" and human_size(9343) == "9 kB"
    finally:
        root.destroy()


def test_run_uses_the_setup_dialog_for_the_real_engine(display, tmp_path, monkeypatch):
    import tkinter as tk

    import desktop.app as app_mod
    from desktop.dirs import AppDirs

    apps = []

    class Recording(app_mod.StudioApp):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            apps.append(self)

    def fake_mainloop(root, n=0):
        (app,) = apps
        wait_until(root, lambda: app.first_run_visible, timeout=60)
        app.first_run.setup_button.invoke()
        dialogs = [w for w in root.winfo_children() if isinstance(w, SetupDialog)]
        assert len(dialogs) == 1 and dialogs[0].folder.get() == str(empty)
        assert rows(dialogs[0])["gpt.pth"] == "missing"
        app.close()

    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setattr(app_mod, "StudioApp", Recording)
    monkeypatch.setattr(tk.Tk, "mainloop", fake_mainloop)
    shown = []
    dirs = AppDirs.under(tmp_path / "home")
    assert app_mod.run(model_dir=empty, dirs=dirs, dialog=lambda k, **o: shown.append(o)) == 0
    assert len(apps) == 1 and apps[0].on_setup_models is setup_models and shown == []
