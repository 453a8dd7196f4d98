"""The IndexTTS2 Desktop main window and its entry points :func:`run` and :func:`selftest`.

The window talks to the engine only through :class:`core.api.EngineProtocol`. Loading and synthesis run
in a worker thread (:mod:`desktop.worker`); every dialog goes through one injectable function
(:mod:`desktop.dialogs`); files live in the folders of :mod:`desktop.dirs`.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from tkinter import ttk
from typing import Any

import numpy as np

from core.api import (
    SAMPLE_RATE,
    Cancelled,
    EngineError,
    EngineProtocol,
    GenerationSettings,
    Progress,
    SegmentAudio,
    SettingError,
    SynthesisRequest,
    SynthesisResult,
    silence_gap,
)
from core.device import DeviceChoice, probe
from desktop import dialogs as dialogs_mod
from desktop.audio import AudioUnavailable
from desktop.dialogs import UserError, describe_error, is_expected
from desktop.dirs import AppDirs, app_dirs
from desktop.emotion_ui import EmotionPanel
from desktop.logs import LogWindow, setup_logging
from desktop.player import Player
from desktop.presets import AppSettings, PresetStore, StateFiles
from desktop.studio_presets import PresetActions
from desktop.studio_results import HistoryEntry, Request, ResultActions
from desktop.voice_library import VoiceError, VoiceLibrary, check_clip
from desktop.widgets.panels import (
    AdvancedPanel,
    FirstRunScreen,
    HistoryPanel,
    TextPanel,
    VoicePanel,
    setting_error_words,
)
from desktop.widgets.record_dialog import RecordDialog
from desktop.widgets.settings_dialog import SettingsDialog
from desktop.widgets.waveform import Waveform
from desktop.worker import Job, Worker

log = logging.getLogger(__name__)

APP_TITLE = "IndexTTS2 Desktop"


def placeholder_setup(app: StudioApp) -> None:
    app.dialog(
        "info",
        parent=app.root,
        title="Model setup",
        message=(
            "The model downloader works with the IndexTTS-2 engine (start the app without --standin, or run "
            "'python main.py models download'). Put the IndexTeam/IndexTTS-2 model files into "
            f"{app.model_dir or app.dirs.data / 'models'} (or choose the folder that holds them), then press Retry."
        ),
    )


@contextmanager
def _engine_turn(lock: threading.Lock, job: Job) -> Iterator[None]:
    """Wait (in the worker) until no other job uses the engine; a cancel while waiting ends the job."""
    while not lock.acquire(timeout=0.02):
        if job.cancel.is_set():
            raise Cancelled()
    try:
        yield
    finally:
        lock.release()


def _prepare(engine: EngineProtocol, lock: threading.Lock, job: Job, clip: Path) -> object:
    with _engine_turn(lock, job):
        return engine.prepare_voice(clip)


class StudioApp(ResultActions, PresetActions):
    """The main window. ``dialog`` replaces every message box and file dialog (tests)."""

    def __init__(
        self,
        root: tk.Tk,
        engine: EngineProtocol,
        *,
        dirs: AppDirs | None = None,
        dialog: Callable[..., object] | None = None,
        model_dir: str | Path | None = None,
        on_setup_models: Callable[[StudioApp], object] | None = None,
        find_model_dir: Callable[[str | None], Path] | None = None,
        autoload: bool = True,
        check_device_on_start: bool = True,
        persist: bool = True,
        device: str | None = None,
    ) -> None:
        self.root = root
        self.engine = engine
        self.dirs = (dirs or app_dirs()).ensure()
        self.dialog: Callable[..., Any] = dialog or dialogs_mod.ask
        self.on_setup_models = on_setup_models or placeholder_setup
        self.persist = persist
        self.log_path = setup_logging(self.dirs.log)
        self.files = StateFiles(self.dirs.config)
        self.settings = self.files.load_settings()
        self.device_override = device  # --device: this run only, not saved in the settings
        self.presets = PresetStore(self.dirs.presets)
        self.library = VoiceLibrary(self.dirs.voices)
        self.worker = Worker(root)
        if model_dir:
            self.model_dir: Path | None = Path(model_dir)
        elif find_model_dir is not None:  # the real engine: settings, $INDEXTTS_MODEL_DIR, then the default folder
            self.model_dir = Path(find_model_dir(self.settings.model_dir or None))
        else:
            self.model_dir = Path(self.settings.model_dir) if self.settings.model_dir else None
        self.job: Job | None = None
        self.load_job: Job | None = None
        self.job_started = 0.0
        self.last_progress: Progress | None = None
        self.history: list[HistoryEntry] = []
        self.current: HistoryEntry | None = None
        self.player: Player | None = None
        self._stream_started = False
        self._stream_gap = np.zeros(0, dtype=np.int16)
        self._cursor_id: str | None = None
        self.device_report: DeviceChoice | None = None
        self.pending_voices: list = []  # voices to prepare once the running synthesis has ended
        self.prepare_job: Job | None = None
        # Held by every worker call into the engine, so two jobs never run on it at once.
        self._engine_lock = threading.Lock()

        root.title(APP_TITLE)
        root.minsize(980, 680)
        root.report_callback_exception = self._callback_exception
        self._style()
        self.status = tk.StringVar(self.root, value="Starting\u2026")
        self.device_note = tk.StringVar(self.root, value="")
        self.stage = tk.StringVar(self.root, value="")
        self.timing = tk.StringVar(self.root, value="")
        self.position = tk.StringVar(self.root, value="0.0 / 0.0 s")
        self.preset_name = tk.StringVar(self.root, value="")
        self.progress = tk.DoubleVar(self.root, value=0.0)
        self._build_menu()
        self.container = ttk.Frame(root)
        self.container.pack(fill="both", expand=True)
        self.studio = ttk.Frame(self.container)
        self.first_run = FirstRunScreen(
            self.container,
            on_setup=self._open_model_setup,
            on_choose=self.choose_model_dir,
            on_retry=self.load_engine,
        )
        self._build_studio()
        bar = ttk.Frame(root, padding=(8, 2))
        bar.pack(fill="x", side="bottom")
        ttk.Label(bar, textvariable=self.status).pack(side="left")
        ttk.Label(bar, textvariable=self.device_note, foreground="#555").pack(side="right")
        self._bind_keys()
        self.studio.pack(fill="both", expand=True)
        self.restore_state()
        for note in self.files.notes:
            self.dialog("warning", parent=root, title="Settings reset", message=note)
        root.protocol("WM_DELETE_WINDOW", self.close)
        self.refresh_buttons()
        if autoload:
            self.load_engine()
        if check_device_on_start:
            self.run_device_check(show=False)

    # --- construction -----------------------------------------------------------------------------------------
    def _style(self) -> None:
        style = ttk.Style(self.root)
        if self.settings.theme in style.theme_names():
            style.theme_use(self.settings.theme)
        style.configure("Accent.TButton", font=("TkDefaultFont", 11, "bold"), padding=(14, 6))
        style.configure("Horizontal.TProgressbar", background="#3b82f6", troughcolor="#e5e7eb", thickness=14)
        style.configure("Treeview", rowheight=22)

    def _build_menu(self) -> None:
        menu = tk.Menu(self.root)
        file = tk.Menu(menu, tearoff=False)
        file.add_command(
            label="Open voice clip\u2026", accelerator="Ctrl+O", command=lambda: self.voice_panel.open_clip()
        )
        file.add_command(label="Save result as WAV\u2026", accelerator="Ctrl+S", command=self.save_wav_dialog)
        file.add_command(label="Quick save to output folder", accelerator="Ctrl+Shift+S", command=self.quick_save)
        file.add_separator()
        file.add_command(label="Quit", accelerator="Ctrl+Q", command=self.close)
        menu.add_cascade(label="File", menu=file)
        presets = tk.Menu(menu, tearoff=False)
        presets.add_command(label="Save current as preset\u2026", command=self.save_preset_dialog)
        presets.add_command(label="Import preset file\u2026", command=self.import_preset)
        menu.add_cascade(label="Presets", menu=presets)
        tools = tk.Menu(menu, tearoff=False)
        tools.add_command(label="Device check", command=lambda: self.run_device_check(show=True))
        tools.add_command(label="Settings\u2026", command=self.open_settings)
        tools.add_command(label="View log", command=self.open_log)
        menu.add_cascade(label="Tools", menu=tools)
        self.root.configure(menu=menu)

    def _build_studio(self) -> None:
        panes = ttk.PanedWindow(self.studio, orient="horizontal")
        panes.pack(fill="both", expand=True, padx=8, pady=8)
        left = ttk.Frame(panes)
        right = ttk.Frame(panes, width=420)
        panes.add(left, weight=3)
        panes.add(right, weight=2)

        self.text_panel = TextPanel(left, split=self._split_for_preview)
        self.text_panel.pack(fill="both", expand=True)
        gen = ttk.Frame(left, padding=(0, 8))
        gen.pack(fill="x")
        self.generate_button = ttk.Button(
            gen, text="Generate  (Ctrl+Enter)", style="Accent.TButton", command=self.generate
        )
        self.generate_button.pack(side="left")
        self.cancel_button = ttk.Button(gen, text="Cancel", command=self.cancel)
        self.cancel_button.pack(side="left", padx=6)
        prog = ttk.Frame(gen)
        prog.pack(side="left", fill="x", expand=True, padx=(6, 0))
        self.progress_bar = ttk.Progressbar(prog, variable=self.progress, maximum=100)
        self.progress_bar.pack(fill="x")
        row = ttk.Frame(prog)
        row.pack(fill="x")
        ttk.Label(row, textvariable=self.stage).pack(side="left")
        ttk.Label(row, textvariable=self.timing).pack(side="right")

        result = ttk.LabelFrame(left, text="Result", padding=6)
        result.pack(fill="x")
        self.waveform = Waveform(result, height=110, on_seek=self.seek)
        self.waveform.pack(fill="x")
        transport = ttk.Frame(result)
        transport.pack(fill="x", pady=(4, 0))
        self.play_button = ttk.Button(transport, text="\u25b6 Play", command=self.play_pause)
        self.play_button.pack(side="left")
        ttk.Button(transport, text="\u25a0 Stop", command=self.stop_playback).pack(side="left", padx=4)
        ttk.Label(transport, textvariable=self.position).pack(side="left", padx=8)
        self.stream_var = tk.BooleanVar(self.root, value=self.settings.streaming)
        ttk.Checkbutton(transport, text="Play first segment as soon as ready", variable=self.stream_var).pack(
            side="left", padx=8
        )
        ttk.Button(transport, text="Save WAV\u2026", command=self.save_wav_dialog).pack(side="right")
        self.history_panel = HistoryPanel(
            left, on_select=self.show_history, on_regenerate=self.regenerate, on_preset=self.history_to_preset
        )
        self.history_panel.pack(fill="both", expand=True, pady=(8, 0))

        self.voice_panel = VoicePanel(
            right,
            self.library,
            self.dialog,
            on_play=self.play_reference,
            on_record=self.open_recorder,
            on_added=self.prepare_voice,
        )
        self.voice_panel.pack(fill="x")
        self.emotion_panel = EmotionPanel(right, pick_clip=self._pick_emotion_clip)
        self.emotion_panel.pack(fill="x", pady=(8, 0))
        self.advanced = AdvancedPanel(right, on_change=lambda: self.root.after_idle(self.text_panel.update_preview))
        self.advanced.pack(fill="x", pady=(8, 0))
        presets = ttk.LabelFrame(right, text="Presets", padding=6)
        presets.pack(fill="x", pady=(8, 0))
        self.preset_box = ttk.Combobox(presets, textvariable=self.preset_name, width=22)
        self.preset_box.pack(side="left", fill="x", expand=True)
        ttk.Button(presets, text="Load", command=lambda: self.load_preset(self.preset_name.get())).pack(
            side="left", padx=4
        )
        ttk.Button(presets, text="Save\u2026", command=self.save_preset_dialog).pack(side="left")
        ttk.Button(presets, text="Delete", command=self.delete_preset).pack(side="left", padx=4)
        self.refresh_presets()

    def _bind_keys(self) -> None:
        r = self.root
        r.bind("<Control-Return>", lambda e: self.generate())
        r.bind("<F5>", lambda e: self.generate())
        r.bind("<Escape>", lambda e: self.cancel())
        r.bind("<Control-s>", lambda e: self.save_wav_dialog())
        r.bind("<Control-S>", lambda e: self.quick_save())
        r.bind("<Control-o>", lambda e: self.voice_panel.open_clip())
        r.bind("<Control-r>", lambda e: self.open_recorder())
        r.bind("<Control-p>", lambda e: self.play_pause())
        r.bind("<Control-q>", lambda e: self.close())

    # --- errors -----------------------------------------------------------------------------------------------
    def error(self, title: str, exc_or_message: BaseException | str, prefix: str = "") -> None:
        """The one error path: expected failures are a message; anything else is a bug, logged with its traceback."""
        if isinstance(exc_or_message, BaseException):
            message, details = describe_error(exc_or_message)
            if is_expected(exc_or_message):
                log.warning("%s: %s", title, message)
            else:
                log.error("%s: internal error", title, exc_info=exc_or_message)
        else:
            message, details = exc_or_message, ""
        self.dialog("error", parent=self.root, title=title, message=prefix + message, details=details)

    def _callback_exception(self, exc_type, exc, tb) -> None:
        self.error("Unexpected error", exc.with_traceback(tb))  # logged there, with the traceback

    # --- engine -----------------------------------------------------------------------------------------------
    def _split_for_preview(self, text: str) -> list[str]:
        try:
            tokens = int(float(self.advanced.vars["max_text_tokens_per_segment"].get()))
        except (ValueError, AttributeError):
            tokens = GenerationSettings().max_text_tokens_per_segment
        return self.engine.split_text(text, max(1, tokens))

    def show_first_run(self, problem: str) -> None:
        self.first_run.show_problem(self.model_dir, problem)
        self.studio.pack_forget()
        self.first_run.pack(fill="both", expand=True)
        self.status.set("Models missing")

    def show_studio(self) -> None:
        self.first_run.pack_forget()
        if not self.studio.winfo_ismapped():
            self.studio.pack(fill="both", expand=True)

    @property
    def first_run_visible(self) -> bool:
        return self.first_run.winfo_manager() != ""

    def _open_model_setup(self) -> None:
        self.on_setup_models(self)

    def load_engine(self) -> None:
        if self.load_job is not None:
            return
        if self.model_dir is not None and not self.model_dir.is_dir():
            self.show_first_run(f"The folder {self.model_dir} does not exist.")
            return
        self.show_studio()
        self.status.set("Loading the models\u2026")
        model_dir, device, fp16 = self.model_dir, self.device, self.settings.fp16

        engine, lock = self.engine, self._engine_lock  # the worker must not hold the window (Tk objects)

        def work(job: Job, post: Callable) -> None:
            with lock:
                engine.load(model_dir, device=device, fp16=fp16, on_progress=lambda p: post("progress", p))

        def done(_: None) -> None:
            self.load_job = None
            self.status.set("Ready.")
            self.show_engine_device()
            self.stage.set("")
            self.progress.set(0)
            self.refresh_buttons()
            self.text_panel.update_preview()
            self._start_pending_voices()

        def failed(exc: BaseException) -> None:
            self.load_job = None
            self.pending_voices.clear()
            self.refresh_buttons()
            if isinstance(exc, EngineError):
                self.show_first_run(str(exc))
            else:
                self.status.set("Loading the models failed.")
                self.error("Loading the models", exc)

        self.load_job = self.worker.start("load", work, done, failed, on_message=lambda k, p: self._on_progress(p))
        self.refresh_buttons()

    @property
    def device(self) -> str:
        """The device to load on: --device for this run, else the Settings choice."""
        return self.device_override or self.settings.device

    def show_engine_device(self) -> None:
        """The status bar names what the loaded engine really uses (a probe only says what it would use)."""
        choice = getattr(self.engine, "device_choice", None)
        if isinstance(choice, DeviceChoice):
            self.device_note.set(choice.summary)

    def choose_model_dir(self) -> None:
        path = self.dialog("directory", parent=self.root, title="Choose the IndexTTS-2 model folder")
        if path:
            self.model_dir = Path(path)
            self.settings.model_dir = str(path)
            self._save_settings()
            self.load_engine()

    # --- generation -------------------------------------------------------------------------------------------
    def refresh_buttons(self) -> None:
        """Generate only when the engine is ready and idle; Cancel only while generating."""
        generating = self.job is not None
        ready = self.engine.loaded and self.load_job is None
        self.generate_button.configure(state="normal" if ready and not generating else "disabled")
        self.cancel_button.configure(state="normal" if generating else "disabled")

    def build_request(self) -> Request:
        """The request from the widgets, or :class:`UserError` saying what to fix."""
        text = self.text_panel.get_text().strip()
        if not text:
            raise UserError("There is no text to speak. Type or paste some text first.")
        voice = self.voice_panel.voice_path.get()
        if not voice:
            raise UserError("Choose a voice first: open a clip, pick one from the library, or record one.")
        try:
            check_clip(voice)
        except VoiceError as exc:
            raise UserError(f"The voice clip cannot be used. {exc}") from None
        settings = self.advanced.get_settings()
        if settings.seed is None:
            settings = replace(settings, seed=random.randrange(2**31))  # recorded so that 'regenerate' is exact
        emotion = self.emotion_panel.to_emotion()
        try:
            emotion.validate()
        except EngineError as exc:
            raise UserError(str(exc)) from None
        if emotion.mode == "audio":
            try:
                check_clip(emotion.audio or "")
            except VoiceError as exc:
                raise UserError(f"The emotion clip cannot be used. {exc}") from None
        synthesis = SynthesisRequest(text=text, voice=voice, emotion=emotion, settings=settings)
        try:
            synthesis.validate(self.engine.limits)  # the loaded model's limits too: nothing starts that would fail
        except SettingError as exc:
            raise UserError(setting_error_words(exc)) from None
        except EngineError as exc:
            raise UserError(str(exc)) from None
        return Request(
            synthesis=synthesis,
            voice_label=self.voice_panel.voice_label.get(),
            emotion_state=self.emotion_panel.get_state(),
            stream=bool(self.stream_var.get()),
        )

    def generate(self) -> Job | None:
        if self.job is not None or self.load_job is not None:
            return None
        if not self.engine.loaded:
            self.error("Generate", "The models are not loaded yet.")
            return None
        try:
            request = self.build_request()
        except UserError as exc:
            self.error("Generate", exc)
            return None
        return self.start_job(request)

    def start_job(self, request: Request) -> Job:
        self.stop_playback()
        engine, lock = self.engine, self._engine_lock  # the worker must not hold the window (Tk objects)
        self._stream_started = False
        self._stream_gap = silence_gap(request.settings.interval_silence_ms)

        def work(job: Job, post: Callable) -> SynthesisResult:
            # One call, streaming or not: the engine's result (audio, warnings, errors) is used as it is.
            with _engine_turn(lock, job):
                return engine.synthesize(
                    request.synthesis,
                    on_progress=lambda p: post("progress", p),
                    on_segment=(lambda seg: post("segment", seg)) if request.stream else None,
                    cancel=job.cancel,
                )

        self.job_started = time.monotonic()
        self.last_progress = None
        self.progress.set(0)
        self.stage.set("Starting\u2026")
        self.status.set("Generating\u2026")
        self.job = self.worker.start(
            "synthesis", work, lambda r: self._job_done(request, r), self._job_failed, self._job_message
        )
        self.refresh_buttons()
        self._tick_timing()
        self.save_state()
        return self.job

    def _on_progress(self, p: Progress) -> None:
        self.last_progress = p
        self.progress.set(max(0.0, min(1.0, p.fraction)) * 100)
        seg = f" \u2014 segment {p.segment}/{p.segments}" if p.segments else ""
        self.stage.set(f"{p.stage}{seg}")

    def _job_message(self, kind: str, payload: object) -> None:
        if kind == "progress":
            self._on_progress(payload)  # type: ignore[arg-type]
        elif kind == "segment":
            self._stream_segment(payload)  # type: ignore[arg-type]

    def _stream_segment(self, seg: SegmentAudio) -> None:
        try:
            player = self._player()
            if not self._stream_started:
                player.load(seg.audio, SAMPLE_RATE, open_ended=True)
                player.play()
                self._stream_started = True
                self._poll_cursor()
            else:
                player.append(
                    np.concatenate([self._stream_gap, seg.audio]), SAMPLE_RATE, last=seg.index + 1 >= seg.count
                )
        except AudioUnavailable as exc:
            self.stream_var.set(False)
            self.status.set(str(exc))
            log.warning("streaming playback disabled: %s", exc)

    def _tick_timing(self) -> None:
        if self.job is None:
            return
        elapsed = time.monotonic() - self.job_started
        text = f"elapsed {elapsed:4.1f} s"
        p = self.last_progress
        if p is not None and 0.03 < p.fraction < 1.0:
            text += f" \u00b7 about {elapsed / p.fraction * (1 - p.fraction):.0f} s left"
        self.timing.set(text)
        self.root.after(200, self._tick_timing)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel.set()
            self.stage.set("Cancelling\u2026")

    def _job_done(self, request: Request, result: SynthesisResult) -> None:
        self.job = None
        self.refresh_buttons()
        entry = HistoryEntry(request=request, result=result)
        self.history.append(entry)
        self.history_panel.add(
            len(self.history) - 1,
            time.strftime("%H:%M:%S"),
            request.text,
            request.voice_label,
            result.duration,
            request.settings.seed,
        )
        self.show_entry(entry)
        took = time.monotonic() - self.job_started
        self.progress.set(100)
        self.stage.set("Done")
        self.timing.set(f"took {took:.1f} s")
        self.status.set(
            f"Generated {result.duration:.1f} s of audio in {took:.1f} s."
            + (" " + " ".join(result.warnings) if result.warnings else "")
        )
        if self._stream_started and self.player is not None:
            self.player.close_stream_input()
        self._start_pending_voices()

    def _job_failed(self, exc: BaseException) -> None:
        self.job = None
        self.refresh_buttons()
        self.progress.set(0)
        if self.player is not None and self._stream_started:
            self.player.stop()
        self.root.after_idle(self._start_pending_voices)
        if isinstance(exc, Cancelled):
            self.stage.set("Cancelled")
            self.status.set("Generation cancelled.")
            return
        self.stage.set("Failed")
        self.status.set("Generation failed.")
        self.error("Generate", exc)

    # --- tools ------------------------------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        return SettingsDialog(self.root, self.settings, self.dialog, self.apply_settings)

    def apply_settings(self, new: AppSettings) -> None:
        reload = (new.model_dir, new.device, new.fp16) != (
            self.settings.model_dir,
            self.settings.device,
            self.settings.fp16,
        )
        if new.output_device != self.settings.output_device and self.player is not None:
            self.player.stop()
            self.player = None
        self.settings = new
        self.stream_var.set(new.streaming)
        self.model_dir = Path(new.model_dir) if new.model_dir else self.model_dir
        self._save_settings()
        if reload and self.job is None:
            self.device_override = None  # the user chose a device in Settings: it now wins over --device
            self.load_engine()

    def open_log(self) -> LogWindow:
        return LogWindow(self.root, self.log_path)

    def open_recorder(self) -> RecordDialog:
        return RecordDialog(
            self.root,
            self.library,
            self.dialog,
            on_saved=self._voice_recorded,
            input_device=self.settings.input_device,
            output_device=self.settings.output_device,
            countdown=self.settings.countdown,
        )

    def _voice_recorded(self, voice) -> None:
        self.voice_panel.refresh()
        self.voice_panel.use_voice(voice)
        self.status.set(f"Voice '{voice.name}' saved and selected.")
        self.prepare_voice(voice)

    def prepare_voice(self, voice) -> Job | None:
        """Compute (and let the engine cache) a new library voice's conditioning now, not at the first Generate.

        Never two jobs on the engine at once: while a synthesis (or a load) runs, the voice is queued and prepared
        when it ends.
        """
        if not self.engine.loaded and self.load_job is None:
            return None
        if self.job is not None or self.load_job is not None:
            if voice not in self.pending_voices:
                self.pending_voices.append(voice)
            return None
        engine, lock, clip = self.engine, self._engine_lock, voice.clip  # the worker must not hold the window

        def done(_: object) -> None:
            self.status.set(f"Voice '{voice.name}' is ready.")

        def failed(exc: BaseException) -> None:
            self.error("Voice", exc, prefix=f"The voice '{voice.name}' could not be prepared: ")

        self.prepare_job = self.worker.start(
            "prepare-voice", lambda job, post: _prepare(engine, lock, job, clip), done, failed
        )
        return self.prepare_job

    def _start_pending_voices(self) -> None:
        """Prepare the voices queued while a job ran, one at a time."""
        if self.job is not None or self.load_job is not None or not self.pending_voices:
            return
        if self.prepare_job is not None and not self.prepare_job.finished:
            self.root.after(50, self._start_pending_voices)
            return
        self.prepare_voice(self.pending_voices.pop(0))
        if self.pending_voices:
            self.root.after(50, self._start_pending_voices)

    def _pick_emotion_clip(self) -> str | None:
        path = self.dialog(
            "open_file", parent=self.root, title="Choose an emotion clip", filetypes=dialogs_mod.AUDIO_FILETYPES
        )
        if not path:
            return None
        try:
            check_clip(path)
        except VoiceError as exc:
            self.error("Emotion clip", str(exc))
            return None
        return path

    def run_device_check(self, show: bool) -> Job:
        """Probe the chosen device in the worker (core.device, the same check the engine's load makes)."""
        requested, fp16 = self.device, self.settings.fp16

        def done(choice: DeviceChoice) -> None:
            self.device_report = choice
            self.device_note.set(choice.summary)
            self.show_engine_device()  # once loaded, the status bar names what the engine really uses
            if show:
                self.dialog(
                    "info", parent=self.root, title="Device check", message=choice.summary, details=choice.details
                )

        return self.worker.start(
            "device-check", lambda job, post: probe(requested, fp16), done, lambda exc: self.error("Device check", exc)
        )

    def close(self) -> None:
        self.save_state()
        if self.job is not None:
            self.job.cancel.set()
        if self.player is not None:
            self.player.stop()
        self.worker.close()
        for pending in self.root.tk.splitlist(self.root.tk.call("after", "info")):
            self.root.after_cancel(pending)  # nothing of this window may fire after it is gone
        self.root.destroy()


# --- entry points ---------------------------------------------------------------------------------------------
def _dpi_aware() -> None:
    if sys.platform == "win32":
        try:
            import ctypes

            ctypes.windll.shcore.SetProcessDpiAwareness(1)
        except Exception:  # older Windows
            pass


def make_engine(
    engine: EngineProtocol | None, standin: bool, dirs: AppDirs
) -> tuple[EngineProtocol, Callable[[str | None], Path] | None]:
    """The engine to use, and how to find its model folder (None for the stand-in, which needs none)."""
    if engine is not None:
        return engine, None
    if standin:
        from desktop.standin import StandInEngine

        return StandInEngine(), None
    try:
        from core.engine import Engine  # the real engine (issue 6)
        from core.models import locate_model_dir
    except ImportError as exc:
        raise UserError(
            "The IndexTTS-2 engine is missing from this installation (core.engine could not be imported). "
            "Reinstall the app, or start it with --standin to try the interface.",
            details=repr(exc),
        ) from exc
    # The engine caches each voice's conditioning here, so a library voice is prepared only once.
    return Engine(cache_dir=dirs.cache / "voices"), lambda from_settings: locate_model_dir(None, from_settings)


def run(
    engine: EngineProtocol | None = None,
    *,
    standin: bool = False,
    model_dir: str | Path | None = None,
    dialog: Callable[..., object] | None = None,
    dirs: AppDirs | None = None,
    on_setup_models: Callable[[StudioApp], object] | None = None,
    device: str | None = None,
) -> int:
    """Open the studio and run until the window closes; 0 on a normal exit, 1 if it could not start.

    ``model_dir`` and ``device`` (from ``--model-dir``/``--device``) override the Settings for this run.
    """
    _dpi_aware()
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"Cannot open a window: {exc}", file=sys.stderr)
        return 1
    dirs = dirs or app_dirs()
    try:
        setup_logging(dirs.log)
        eng, find_model_dir = make_engine(engine, standin, dirs)
        if on_setup_models is None and find_model_dir is not None:  # the real engine: the model downloader
            from desktop.setup_dialog import setup_models

            on_setup_models = setup_models
        StudioApp(
            root,
            eng,
            dirs=dirs,
            dialog=dialog,
            model_dir=model_dir,
            on_setup_models=on_setup_models,
            find_model_dir=find_model_dir,
            device=device,
        )
    except Exception as exc:
        log.exception("the app could not start")
        message, details = describe_error(exc)
        root.withdraw()
        (dialog or dialogs_mod.ask)(
            "error", parent=root, title=APP_TITLE, message=f"The app could not start. {message}", details=details
        )
        root.destroy()
        return 1
    root.mainloop()
    return 0


def selftest(engine: EngineProtocol, dirs: AppDirs | None = None) -> int:
    """Open and close the main window without touching the user's state; 0 when healthy."""
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(f"selftest: cannot open a window: {exc}", file=sys.stderr)
        return 1
    shown: list[tuple[str, dict]] = []
    try:
        app = StudioApp(
            root,
            engine,
            dirs=dirs,
            dialog=lambda kind, **o: shown.append((kind, o)),
            autoload=False,
            check_device_on_start=False,
            persist=False,
        )
        root.update()
        ok = root.winfo_ismapped() and app.generate_button.winfo_exists() and app.waveform.winfo_ismapped()
        errors = [o.get("message") for kind, o in shown if kind == "error"]
        if errors:
            log.error("selftest: errors shown: %s", errors)
        app.close()
        return 0 if ok and not errors else 1
    except Exception:
        log.exception("selftest failed")
        try:
            root.destroy()
        except tk.TclError:
            pass
        return 1
