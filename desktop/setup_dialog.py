"""The first-run model setup dialog: what is missing, where to download it from, and the download itself.

The download (:func:`core.models.download`) runs in a worker thread of :class:`desktop.worker.Worker`; it only
posts messages, and every widget is updated on the Tk thread. Cancel sets the job's event: the downloader stops
at its next chunk, nothing half-written is moved into place, and Retry resumes from what was already fetched.
"""

from __future__ import annotations

import logging
import os
import time
import tkinter as tk
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tkinter import ttk
from typing import Any, Literal

from core import models
from desktop.dialogs import describe_error
from desktop.worker import Job, Worker

log = logging.getLogger(__name__)

SOURCES = (
    ("hf", "HuggingFace"),
    ("modelscope", "ModelScope (China)"),
    ("mirror", "Mirror address:"),
)
POST_EVERY_S = 0.1  # the worker posts byte progress at most this often per file
SPEED_WINDOW_S = 5.0
STALL_S = 3.0  # no bytes for this long: 'waiting for the server'


def human_size(n: int | float | None) -> str:
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB"


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


@dataclass
class PlannedFile:
    local: str
    what: str
    size: int | None  # bytes, None when neither the manifest nor the server said


def describe_setup_error(exc: BaseException) -> tuple[str, str]:
    """(short message, details) for a failed download."""
    if isinstance(exc, models.ModelSetupError):
        return str(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return describe_error(exc)


class SetupDialog(tk.Toplevel):
    """Lists the missing model files and downloads them with per-file and overall progress, cancel and retry.

    ``on_done(folder)`` runs on the Tk thread once every required file is in place; the dialog then closes.
    ``manifest`` and ``endpoint`` exist for tests (a tiny manifest, a loopback hub).
    """

    def __init__(
        self,
        parent: tk.Misc,
        model_dir: str | Path,
        *,
        worker: Worker,
        on_done: Callable[[Path], None],
        dialog: Callable[..., object] | None = None,
        manifest: tuple[models.ModelFile, ...] = models.MANIFEST,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.title("Set up the voice models")
        self.minsize(640, 520)
        self.transient(parent.winfo_toplevel())
        self.worker = worker
        self.on_done = on_done
        self.dialog = dialog
        self.manifest = manifest
        self.job: Job | None = None
        self.plan: list[PlannedFile] = []
        self.file_done: dict[str, int] = {}
        self.file_total: dict[str, int | None] = {}
        self.current: str | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._speed: float | None = None
        self._closed = False
        self._last_bytes_at: float | None = None
        self._tick_id: str | None = None
        self.clock: Callable[[], float] = time.monotonic  # for the speed estimate (tests replace it)

        mirror = endpoint or os.environ.get("HF_ENDPOINT", "")
        self.phase = tk.StringVar(self, value="ready")  # ready | downloading | cancelling | cancelled | error | done
        self.folder = tk.StringVar(self, value=str(Path(model_dir)))
        self.source = tk.StringVar(self, value="mirror" if mirror else "hf")
        self.endpoint = tk.StringVar(self, value=mirror)
        self.optional = tk.BooleanVar(self, value=any(m.optional for m in manifest))
        self.summary = tk.StringVar(self, value="")
        self.file_label = tk.StringVar(self, value="")
        self.file_bytes = tk.StringVar(self, value="")
        self.overall_bytes = tk.StringVar(self, value="")
        self.speed_label = tk.StringVar(self, value="")
        self.error_message = tk.StringVar(self, value="")
        self.file_progress = tk.DoubleVar(self, value=0.0)
        self.overall_progress = tk.DoubleVar(self, value=0.0)
        self._build()
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind("<Escape>", lambda e: self.cancel() if self.busy else self.close())
        self.refresh_list()

    # --- construction ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        body = ttk.Frame(self, padding=14)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text="Download the IndexTTS-2 models", font=("TkDefaultFont", 14, "bold")).pack(anchor="w")
        ttk.Label(body, textvariable=self.summary, wraplength=600, justify="left").pack(anchor="w", pady=(6, 8))

        row = ttk.Frame(body)
        row.pack(fill="x")
        ttk.Label(row, text="Model folder:").pack(side="left")
        self.folder_entry = ttk.Entry(row, textvariable=self.folder)
        self.folder_entry.pack(side="left", fill="x", expand=True, padx=6)
        self.folder_entry.bind("<FocusOut>", lambda e: self.refresh_list())
        self.folder_entry.bind("<Return>", lambda e: self.refresh_list())
        self.change_button = ttk.Button(row, text="Change\u2026", command=self.choose_folder)
        self.change_button.pack(side="left")

        self.tree = ttk.Treeview(body, columns=("file", "what", "state", "size"), show="headings", height=7)
        for col, title, width in (("file", "File", 240), ("what", "Contents", 190), ("state", "State", 70),
                                  ("size", "Size", 80)):
            self.tree.heading(col, text=title)
            self.tree.column(col, width=width, stretch=col in ("file", "what"))
        self.tree.pack(fill="both", expand=True, pady=(8, 8))

        src = ttk.LabelFrame(body, text="Download from", padding=6)
        src.pack(fill="x")
        self.source_buttons: dict[str, ttk.Radiobutton] = {}
        for key, label in SOURCES:
            b = ttk.Radiobutton(src, text=label, value=key, variable=self.source, command=self._source_changed)
            b.pack(side="left", padx=(0, 8))
            self.source_buttons[key] = b
        self.endpoint_entry = ttk.Entry(src, textvariable=self.endpoint, width=28)
        self.endpoint_entry.pack(side="left", fill="x", expand=True)
        self.optional_check = ttk.Checkbutton(
            body,
            text="Also download the emotion-from-text model (optional, about 1.2 GB)",
            variable=self.optional,
            command=self.refresh_list,
        )
        if any(m.optional for m in self.manifest):
            self.optional_check.pack(anchor="w", pady=(6, 0))

        prog = ttk.Frame(body)
        prog.pack(fill="x", pady=(10, 0))
        ttk.Label(prog, textvariable=self.file_label).pack(anchor="w")
        self.file_bar = ttk.Progressbar(prog, variable=self.file_progress, maximum=100)
        self.file_bar.pack(fill="x")
        ttk.Label(prog, textvariable=self.file_bytes, style="Muted.TLabel").pack(anchor="e")
        ttk.Label(prog, text="Overall").pack(anchor="w")
        self.overall_bar = ttk.Progressbar(prog, variable=self.overall_progress, maximum=100)
        self.overall_bar.pack(fill="x")
        line = ttk.Frame(prog)
        line.pack(fill="x")
        ttk.Label(line, textvariable=self.overall_bytes, style="Muted.TLabel").pack(side="left")
        ttk.Label(line, textvariable=self.speed_label, style="Muted.TLabel").pack(side="right")

        self.error_frame = ttk.Frame(body)
        ttk.Label(self.error_frame, textvariable=self.error_message, style="Error.TLabel", wraplength=600,
                  justify="left").pack(anchor="w", fill="x")
        self.details_button = ttk.Button(self.error_frame, text="Details \u25b8", command=self.toggle_details)
        self.details_button.pack(anchor="w", pady=(4, 0))
        self.details = tk.Text(self.error_frame, height=8, width=80, wrap="word")

        buttons = ttk.Frame(body)
        buttons.pack(fill="x", side="bottom", pady=(10, 0))
        self.close_button = ttk.Button(buttons, text="Close", command=self.close)
        self.close_button.pack(side="right")
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.cancel, state="disabled")
        self.cancel_button.pack(side="right", padx=6)
        self.start_button = ttk.Button(buttons, text="Download", style="Accent.TButton", command=self.start)
        self.start_button.pack(side="right")
        self._source_changed()

    # --- what is missing ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def model_dir(self) -> Path:
        return Path(self.folder.get().strip()).expanduser()

    def missing(self) -> list[models.FileStatus]:
        include = bool(self.optional.get())
        statuses = models.check(self.model_dir, verify=True, include_optional=include, manifest=self.manifest)
        return models.problems(statuses, include_optional=include)

    def refresh_list(self) -> None:
        if self.busy or self._closed:
            return
        todo = self.missing()
        self.tree.delete(*self.tree.get_children())
        for status in todo:
            item = status.item
            self.tree.insert("", "end", iid=item.local, values=(item.local, item.what, status.state,
                                                                 human_size(item.size) if item.size else ""))
        if todo:
            self.summary.set(
                f"{len(todo)} file(s) are missing or damaged in this folder. They come from the official "
                "IndexTTS-2 release and its helper models; everything already complete is kept."
            )
            if self.phase.get() in ("ready", "done"):
                self.start_button.configure(text="Download")
        else:
            self.summary.set("Every model file is present in this folder.")
            self.start_button.configure(text="Use this folder")
        self._buttons()

    def choose_folder(self) -> None:
        if self.dialog is None:
            return
        path = self.dialog("directory", parent=self, title="Where should the models go?",
                           initialdir=str(self.model_dir.parent))
        if path:
            self.folder.set(str(path))
            self.refresh_list()

    def _source_changed(self) -> None:
        self.endpoint_entry.configure(state="normal" if self.source.get() == "mirror" and not self.busy else "disabled")

    def _buttons(self) -> None:
        busy = self.busy
        state: Literal["normal", "disabled"] = "disabled" if busy else "normal"
        self.start_button.configure(state=state)
        self.cancel_button.configure(state="normal" if self.phase.get() == "downloading" else "disabled")
        self.folder_entry.configure(state=state)
        self.change_button.configure(state=state)
        self.optional_check.configure(state=state)
        for button in self.source_buttons.values():
            button.configure(state=state)
        self._source_changed()

    # --- errors ------------------------------------------------------------------------------------------------
    def show_error(self, message: str, details: str = "") -> None:
        self.error_message.set(message)
        self.details.configure(state="normal")
        self.details.delete("1.0", "end")
        self.details.insert("1.0", details)
        self.details.configure(state="disabled")
        if details:
            self.details_button.pack(anchor="w", pady=(4, 0))
        else:
            self.details_button.pack_forget()
        self.details.pack_forget()
        self.details_button.configure(text="Details \u25b8")
        self.error_frame.pack(fill="x", pady=(10, 0))

    def clear_error(self) -> None:
        self.error_message.set("")
        self.error_frame.pack_forget()

    def toggle_details(self) -> None:
        if self.details.winfo_manager():
            self.details.pack_forget()
            self.details_button.configure(text="Details \u25b8")
        else:
            self.details.pack(fill="both", expand=True, pady=(4, 0))
            self.details_button.configure(text="Details \u25be")

    # --- download ----------------------------------------------------------------------------------------------
    def _source_args(self) -> tuple[str, str | None]:
        choice = self.source.get()
        if choice != "mirror":
            return choice, None
        url = self.endpoint.get().strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError("Enter the mirror's address, for example https://hf-mirror.com, or choose HuggingFace.")
        return "hf", url

    def start(self) -> Job | None:
        """Download everything missing (or, when nothing is, use the folder at once)."""
        if self.busy or self._closed:
            return None
        try:
            source, endpoint = self._source_args()
        except ValueError as exc:
            self.phase.set("error")
            self.show_error(str(exc))
            return None
        folder, include, manifest = self.model_dir, bool(self.optional.get()), self.manifest
        if not self.missing():
            self._finish(folder)
            return None
        self.clear_error()
        self.plan, self.file_done, self.file_total, self.current = [], {}, {}, None
        self._samples.clear()
        self._speed = None
        self.file_progress.set(0)
        self.overall_progress.set(0)
        self.file_label.set("Checking the files on the server\u2026")
        self.file_bytes.set("")
        self.overall_bytes.set("")
        self.speed_label.set("")
        self.phase.set("downloading")

        def work(job: Job, post: Callable[[str, Any], None]) -> list[models.FileStatus]:
            statuses = models.check(folder, verify=True, include_optional=include, manifest=manifest)
            todo = models.problems(statuses, include_optional=include)
            with ThreadPoolExecutor(max_workers=8) as pool:  # sizes for the overall bar, asked in parallel
                sizes = list(pool.map(lambda s: models.remote_size(s.item, source, endpoint), todo))
            if job.cancel.is_set():
                raise models.DownloadCancelled("Download cancelled.")
            post("plan", [PlannedFile(s.item.local, s.item.what, size) for s, size in zip(todo, sizes, strict=True)])
            last: dict[str, float] = {}

            def on_bytes(name: str, done: int, total: int | None) -> None:
                now = time.monotonic()
                if now - last.get(name, 0.0) >= POST_EVERY_S or (total is not None and done >= total):
                    last[name] = now
                    post("bytes", (name, done, total))

            return models.download(
                folder,
                source=source,
                endpoint=endpoint,
                include_optional=include,
                on_bytes=on_bytes,
                on_file=lambda i, n, item: post("file", (i, n, item.local, item.what)),
                cancel=job.cancel,
                manifest=manifest,
            )

        self.job = self.worker.start("model-download", work, self._done, self._failed, self._message)
        self._last_bytes_at = self.clock()
        self._buttons()
        self._tick()
        return self.job

    def _tick(self) -> None:
        """While downloading: say so when the server has sent nothing for a while (the speed would be stale)."""
        self._tick_id = None
        if self._closed:
            return
        if self._last_bytes_at is not None and self.clock() - self._last_bytes_at > STALL_S:
            self.speed_label.set("waiting for the server\u2026")
        if self.job is not None:
            self._tick_id = self.after(500, self._tick)

    def cancel(self) -> None:
        if self.job is not None and self.phase.get() == "downloading":
            self.job.cancel.set()
            self.phase.set("cancelling")
            self.file_label.set("Cancelling\u2026")
            self._buttons()

    def _message(self, kind: str, payload: Any) -> None:
        if self._closed:
            return
        if kind == "plan":
            self.plan = payload
            for p in self.plan:
                self.file_total[p.local] = p.size
                if p.size is not None and self.tree.exists(p.local):
                    self.tree.set(p.local, "size", human_size(p.size))
        elif kind == "file":
            i, n, local, what = payload
            self.current = local
            self.file_done.setdefault(local, 0)
            self.file_progress.set(0)
            self.file_bytes.set("")
            if self.phase.get() == "downloading":
                self.file_label.set(f"File {i + 1} of {n}: {local} ({what})")
            self._set_row(local, "fetching")
            for earlier in list(self.file_done):
                if earlier != local and self.tree.exists(earlier) and self.tree.set(earlier, "state") == "fetching":
                    self._set_row(earlier, "done")
        elif kind == "bytes":
            name, done, total = payload
            first = name not in self.file_done or self.file_done[name] == 0
            self.file_done[name] = done
            if total:
                self.file_total[name] = total
                self.file_progress.set(min(100.0, 100.0 * done / total))
            self.file_bytes.set(f"{human_size(done)} of {human_size(total)}" if total else human_size(done))
            if first:
                self._samples.clear()  # a resumed file starts with the bytes already on disk: not speed
            self._last_bytes_at = self.clock()
            self._update_overall()

    def _set_row(self, local: str, state: str) -> None:
        if self.tree.exists(local):
            self.tree.set(local, "state", state)

    def _update_overall(self) -> None:
        done = sum(self.file_done.values())
        sizes = [self.file_total.get(p.local) for p in self.plan]
        known = all(s is not None for s in sizes) and bool(sizes)
        total = sum(s for s in sizes if s is not None)
        now = self.clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 - t0 > 0.2:
            self._speed = max(0.0, (d1 - d0) / (t1 - t0))
        if known and total:
            self.overall_progress.set(min(100.0, 100.0 * done / total))
            self.overall_bytes.set(f"{human_size(done)} of {human_size(total)}")
        else:
            self.overall_bytes.set(f"{human_size(done)} of at least {human_size(total)}" if total else human_size(done))
        if self._speed:
            text = f"{human_size(self._speed)}/s"
            if known and total > done:
                text += f" \u00b7 about {human_duration((total - done) / self._speed)} left"
            self.speed_label.set(text)

    def _done(self, statuses: list[models.FileStatus]) -> None:
        self.job = None
        if self._closed:
            return
        bad = models.problems(statuses, include_optional=bool(self.optional.get()))
        if bad:
            self.phase.set("error")
            self.show_error(
                f"{len(bad)} file(s) are still missing or damaged after the download. Press Retry.",
                "\n".join(models.describe(s) for s in bad),
            )
            self.start_button.configure(text="Retry")
            self._buttons()
            return
        for p in self.plan:
            self._set_row(p.local, "done")
        self.file_progress.set(100)
        self.overall_progress.set(100)
        self.file_label.set("All model files are in place.")
        self._finish(self.model_dir)

    def _finish(self, folder: Path) -> None:
        self.phase.set("done")
        self._buttons()
        log.info("model setup complete in %s", folder)
        self.on_done(folder)
        self.close()

    def _failed(self, exc: BaseException) -> None:
        self.job = None
        if self._closed:
            return
        self.start_button.configure(text="Retry")
        if self.current:
            self._set_row(self.current, "stopped")
        if isinstance(exc, models.DownloadCancelled):
            self.phase.set("cancelled")
            self.file_label.set("Download cancelled.")
            self.show_error("Download cancelled. The files that finished are kept; press Retry to continue.")
        else:
            message, details = describe_setup_error(exc)
            log.warning("model download failed: %s", message, exc_info=not isinstance(exc, models.ModelSetupError))
            self.phase.set("error")
            self.file_label.set("The download stopped.")
            self.show_error(message, details)
        self.speed_label.set("")
        self._buttons()

    def close(self) -> None:
        """Close the window; a running download is cancelled (its thread stops at the next chunk)."""
        if self.job is not None:
            self.job.cancel.set()
        self._closed = True
        if self._tick_id is not None:
            self.after_cancel(self._tick_id)
            self._tick_id = None
        try:
            self.destroy()
        except tk.TclError:
            pass


def setup_models(
    app: Any,
    *,
    manifest: tuple[models.ModelFile, ...] = models.MANIFEST,
    endpoint: str | None = None,
) -> SetupDialog:
    """The studio's ``on_setup_models`` hook: open (or raise) the setup dialog; on success use the folder."""
    for child in app.root.winfo_children():
        if isinstance(child, SetupDialog) and not child._closed:
            child.lift()
            return child
    folder = app.model_dir or models.locate_model_dir(None, app.settings.model_dir or None)

    def done(path: Path) -> None:
        app.model_dir = path
        app.settings.model_dir = str(path)
        app._save_settings()
        app.load_engine()

    return SetupDialog(app.root, folder, worker=app.worker, on_done=done, dialog=app.dialog, manifest=manifest,
                       endpoint=endpoint)
