"""The IndexTTS2 Desktop main window and its entry points :func:`run` and :func:`selftest`.

The window talks to the engine only through :class:`core.api.EngineProtocol`. Loading and synthesis run
in a worker thread (:mod:`desktop.worker`); every dialog goes through one injectable function
(:mod:`desktop.dialogs`); files live in the folders of :mod:`desktop.dirs`.
"""

from __future__ import annotations

import logging
import random
import sys
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from tkinter import ttk
from typing import Any

from core.api import (
    AudioChunk,
    Cancelled,
    EngineError,
    EngineProtocol,
    GenerationSettings,
    Progress,
    SettingError,
    SynthesisRequest,
    SynthesisResult,
)
from core.device import DeviceChoice, probe
from desktop import dialogs as dialogs_mod
from desktop import window as window_mod
from desktop.commands import AppState, CommandTable
from desktop.dialogs import UserError, describe_error, is_expected
from desktop.dirs import AppDirs, app_dirs
from desktop.dnd import enable_drop
from desktop.engine_turns import EngineTurns
from desktop.history import HistoryEntry, Request
from desktop.logs import LogWindow, setup_logging
from desktop.projects_view import ProjectsView
from desktop.pronunciation import DictionaryError, PronunciationDictionary
from desktop.settings import AppSettings, Preset, PresetStore, StateFiles
from desktop.theme import Palette, apply_theme
from desktop.theme import resolve as resolve_theme
from desktop.voice_library import Voice, VoiceError, VoiceLibrary, check_clip
from desktop.widgets.dictionary import DictionaryDialog, Glossary
from desktop.widgets.emotion import EmotionPanel
from desktop.widgets.local_api import LocalApiControl
from desktop.widgets.model_bar import ModelBar
from desktop.widgets.panels import (
    AdvancedPanel,
    FirstRunScreen,
    TextPanel,
    VoicePanel,
    setting_error_words,
)
from desktop.widgets.preset_bar import PresetBar
from desktop.widgets.record_dialog import RecordDialog
from desktop.widgets.results import ResultPanel
from desktop.widgets.scroll import ScrollFrame
from desktop.widgets.settings_dialog import SettingsDialog
from desktop.worker import Job, Worker

log = logging.getLogger(__name__)

APP_TITLE = "IndexTTS2 Desktop"
SYSTEM_THEME_POLL_MS = 5000  # how often "Follow the system" asks the OS (darkdetect) for light or dark


def placeholder_setup(app: StudioApp) -> None:
    app.dialog(
        "info",
        parent=app.root,
        title="Model setup",
        message=(
            "This is the demo engine: it has no model downloader. Put the IndexTeam/IndexTTS-2 model files into "
            f"{app.model_dir or app.dirs.data / 'models'} (or press 'Choose model folder' for the folder that holds "
            "them), then press Retry."
        ),
    )


@contextmanager
def _engine_turn(lock: EngineTurns, job: Job) -> Iterator[None]:
    """Wait (in the worker) for this job's turn in the app's one engine queue (studio, projects, local API); a
    cancel while waiting ends the job."""
    with lock.turn("gui", job.name, job.cancel):
        yield


def _prepare(engine: EngineProtocol, lock: EngineTurns, job: Job, clip: Path) -> object:
    with _engine_turn(lock, job):
        return engine.prepare_voice(clip)


class StudioApp:
    """The main window. ``dialog`` replaces every message box and file dialog (tests).

    What is enabled follows :attr:`state` alone, through the command table (:mod:`desktop.commands`).
    """

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
        self.device_report: DeviceChoice | None = None
        self.pending_voices: list[Voice] = []  # voices to prepare once the running synthesis has ended
        self.prepare_job: Job | None = None
        # Every worker call into the engine takes its turn here (one queue with projects and the local API).
        self._engine_lock = EngineTurns()

        root.title(APP_TITLE)
        root.report_callback_exception = self._callback_exception
        self.palette: Palette = self.set_theme(self.settings.theme)
        self.pronunciation = PronunciationDictionary(self.dirs.data)
        self.status = tk.StringVar(self.root, value="Starting\u2026")
        self.device_note = tk.StringVar(self.root, value="")
        self.stage = tk.StringVar(self.root, value="")
        self.timing = tk.StringVar(self.root, value="")
        self.progress = tk.DoubleVar(self.root, value=0.0)
        self.commands = CommandTable(root, lambda: self.state)
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
        self.local_api = LocalApiControl(self)  # Tools → Local API: the speech server over this engine
        self.projects = ProjectsView(self)  # the Projects tab beside the studio
        bar = ttk.Frame(root, padding=(8, 2))
        bar.pack(fill="x", side="bottom")
        ttk.Label(bar, textvariable=self.status).pack(side="left")
        ttk.Label(bar, textvariable=self.device_note, style="Muted.TLabel").pack(side="right")
        self._register_commands()
        self.studio.pack(fill="both", expand=True)
        enable_drop(self.projects.page, lambda paths: self.projects.import_file(paths[0]) if paths else None)
        window_mod.place(root, self.settings.window if persist else "")
        if persist and self.settings.sash > 0:
            window_mod.restore_sash(self.panes, self.settings.sash)
        self.restore_state()
        self.use_dictionary()
        root.after(SYSTEM_THEME_POLL_MS, self._follow_system_theme)
        for note in self.files.notes:
            self.dialog("warning", parent=root, title="Settings reset", message=note)
        root.protocol("WM_DELETE_WINDOW", self.close)
        self.refresh_state()
        if autoload:
            self.load_engine()
        if check_device_on_start:
            self.run_device_check(show=False)

    # --- construction -----------------------------------------------------------------------------------------
    def set_theme(self, mode: str) -> Palette:
        """Light, dark or the system's (desktop.theme); every window and custom widget follows."""
        self.palette = apply_theme(self.root, mode)
        ttk.Style(self.root).configure("Accent.TButton", font=("TkDefaultFont", 10, "bold"))
        return self.palette

    def _follow_system_theme(self) -> None:
        """With 'Follow the system', a light/dark switch of the OS shows within a few seconds."""
        if self.settings.theme == "system" and resolve_theme("system") != self.palette.name:
            self.set_theme("system")
        self.root.after(SYSTEM_THEME_POLL_MS, self._follow_system_theme)

    def _build_studio(self) -> None:
        self.panes = panes = ttk.PanedWindow(self.studio, orient="horizontal")
        panes.pack(fill="both", expand=True, padx=8, pady=8)
        left = ttk.Frame(panes)
        self.right_scroll = ScrollFrame(panes)  # the right column scrolls on a small screen
        self.right_scroll.canvas.configure(height=360)
        right = self.right_scroll.body
        panes.add(left, weight=1)
        panes.add(self.right_scroll, weight=0)  # a narrower window narrows the text side, not the controls

        self.text_panel = TextPanel(left, split=self._split_for_preview, report=lambda m: self.error("Text", m))
        gen = ttk.Frame(left, padding=(0, 8))
        self.generate_button = ttk.Button(gen, text="Generate  (Ctrl+Enter)", style="Accent.TButton")
        self.generate_button.pack(side="left")
        self.cancel_button = ttk.Button(gen, text="Cancel")
        self.cancel_button.pack(side="left", padx=6)
        prog = ttk.Frame(gen)
        prog.pack(side="left", fill="x", expand=True, padx=(6, 0))
        self.progress_bar = ttk.Progressbar(prog, variable=self.progress, maximum=100)
        self.progress_bar.pack(fill="x")
        row = ttk.Frame(prog)
        row.pack(fill="x")
        ttk.Label(row, textvariable=self.stage).pack(side="left")
        ttk.Label(row, textvariable=self.timing).pack(side="right")

        self.results = ResultPanel(
            left,
            dialog=self.dialog,
            report_error=self.error,
            on_status=self.status.set,
            output_dir=self.output_dir,
            output_device=lambda: self.settings.output_device,
            on_regenerate=self.regenerate,
            on_preset=self.history_to_preset,
            streaming=self.settings.streaming,
            save_format=self.settings.save_format,
            on_format=self._remember_format,
            stream_inside=self.settings.stream_inside,
            on_stream_change=self._stream_changed,
        )
        # Packed bottom up, the text box last: on a small screen it is the one that gets shorter.
        self.results.pack(fill="both", expand=True, side="bottom")
        gen.pack(fill="x", side="bottom")
        self.text_panel.pack(fill="both", expand=True)

        self.model_bar = ModelBar(right, on_model=self.choose_model_version,
                                  on_change=lambda: self.root.after_idle(self.text_panel.update_preview),
                                  on_ab=self.generate_ab)
        self.model_bar.pack(fill="x", pady=(0, 8))
        self.voice_panel = VoicePanel(
            right,
            self.library,
            self.dialog,
            on_play=lambda path: self.results.play_clip(path),
            on_record=self.open_recorder,
            on_added=self.prepare_voice,
        )
        self.voice_panel.pack(fill="x")
        self.emotion_panel = EmotionPanel(right, pick_clip=self._pick_emotion_clip)
        self.emotion_panel.pack(fill="x", pady=(8, 0))
        self.advanced = AdvancedPanel(right, on_change=lambda: self.root.after_idle(self.text_panel.update_preview))
        self.advanced.pack(fill="x", pady=(8, 0))
        self.advanced.note_one_beam(self.results.streams_inside)  # again with the model's limits once it is loaded
        self.preset_bar = PresetBar(
            right,
            PresetStore(self.dirs.presets),
            capture=self.snapshot,
            apply=self.apply_preset,
            dialog=self.dialog,
            report_error=self.error,
            on_status=self.status.set,
        )
        self.preset_bar.pack(fill="x", pady=(8, 0))

    def _register_commands(self) -> None:
        """Every menu item and shortcut of the window, and when it is enabled (one line each)."""
        add, results = self.commands.add, self.results
        add("open_clip", "Open voice clip\u2026", self.voice_panel.open_clip, menu="File", shortcuts="Ctrl+O")
        add("record", "Record a voice\u2026", self.open_recorder, menu="File", shortcuts="Ctrl+R")
        add("save_wav", "Save result as\u2026 (WAV, FLAC, MP3, Opus)", results.save_dialog, menu="File",
            shortcuts="Ctrl+S", separator_before=True)
        add("quick_save", "Quick save to output folder", results.quick_save, menu="File", shortcuts="Ctrl+Shift+S")
        add("quit", "Quit", self.close, menu="File", shortcuts="Ctrl+Q", separator_before=True)
        add("generate", "Generate", self.generate, menu="Speech", shortcuts=("Ctrl+Enter", "F5"),
            enabled_in={AppState.READY})
        add("cancel", "Cancel", self.cancel, menu="Speech", shortcuts="Esc", enabled_in={AppState.GENERATING})
        add("play", "Play / pause result", results.play_pause, menu="Speech", shortcuts="Ctrl+P",
            tester=lambda: results.current is not None)
        self.projects.register(add)
        add("save_preset", "Save current as preset\u2026", self.preset_bar.save_dialog, menu="Presets")
        add("import_preset", "Import preset file\u2026", self.preset_bar.import_file, menu="Presets")
        add("device_check", "Device check", lambda: self.run_device_check(show=True), menu="Tools")
        add("dictionary", "Pronunciation dictionary\u2026", self.open_dictionary, menu="Tools")
        add("settings", "Settings\u2026", self.open_settings, menu="Tools")
        add("log", "View log", self.open_log, menu="Tools")
        self.local_api.register(add)
        self.commands.attach(self.generate_button, "generate")
        self.commands.attach(self.cancel_button, "cancel")

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
        if not self._is_v25():
            return self.engine.split_text(text, max(1, tokens))
        lang, tokens = self.model_bar.lang_for(text), self._segment_tokens(text, max(1, tokens))
        segments = self.engine.split_text(text, tokens, lang)
        dropped = self.engine.ignored_marks(text, tokens, lang)
        if dropped:  # said in the preview, under the segments (upstream drops them too: we do not diverge)
            self.root.after_idle(lambda: self.text_panel.preview.insert(
                "end", f"  note: {dropped} \u2018!\u2019 or \u2018\"\u2019 here ha{'s' if dropped == 1 else 've'} no "
                "effect in IndexTTS-2.5 (the model never sees a lone ! or \")"))
        return segments

    # --- the model (IndexTTS 2.0 / 2.5) -----------------------------------------------------------------------
    def _is_v25(self) -> bool:
        limits = self.engine.limits
        return limits is not None and limits.version == "2.5"

    def _segment_tokens(self, text: str, tokens: int) -> int:
        """IndexTTS-2.5 at the default tokens per segment: its language's default (core.text.v25)."""
        if tokens != GenerationSettings.max_text_tokens_per_segment:
            return tokens
        return self.model_bar.default_tokens(self.model_bar.lang_for(text))

    def version_folder(self, version: str | None = None) -> Path | None:
        """The folder of ``version`` (default: the picker's) for the model folder, where it is installed."""
        from core.models import installed_versions, version_dir

        if self.model_dir is None:
            return None
        version = version or self.settings.model_version
        return version_dir(self.model_dir, version) if version in installed_versions(self.model_dir) else \
            self.model_dir

    def _update_model_bar(self) -> None:
        from core.models import installed_versions

        limits = self.engine.limits
        versions = installed_versions(self.model_dir) if self.model_dir is not None else []
        self.model_bar.set_versions(versions, limits.version if limits is not None else self.settings.model_version)

    def choose_model_version(self, version: str) -> None:
        """The model picker: load that version (the next jobs use it); remembered."""
        if self.state is not AppState.READY or version == (self.engine.limits and self.engine.limits.version):
            self._update_model_bar()
            return
        self.settings = replace(self.settings, model_version=version)
        self._save_settings()
        self.load_engine()

    def _with_model(self, synthesis: SynthesisRequest, version: str) -> SynthesisRequest:
        """The request for ``version``: 2.5 gets the language, duration and its tokens per segment; 2.0 neither."""
        s = synthesis.settings
        if version != "2.5":
            return replace(synthesis, settings=replace(s, lang=None, duration_factor=1.0))
        return replace(synthesis, settings=replace(
            s, lang=self.model_bar.lang(), duration_factor=self.model_bar.duration_factor(),
            max_text_tokens_per_segment=self._segment_tokens(synthesis.text, s.max_text_tokens_per_segment)))

    def generate_ab(self) -> Job | None:
        """A/B: the same text, voice, emotion and seed with IndexTTS-2.0, then 2.5; both takes go to the history
        (play or keep either); the picker's model is loaded again afterwards."""
        from core.models import installed_versions

        if self.state is not AppState.READY or self.model_dir is None:
            return None
        if not {"2.0", "2.5"} <= set(installed_versions(self.model_dir)):
            self.error("A/B", "A/B needs both IndexTTS-2.0 and IndexTTS-2.5 in the model folder "
                              "(python main.py models download --model 2.5).")
            return None
        try:
            base = self.build_request()
        except UserError as exc:
            self.error("A/B", exc)
            return None
        requests = [replace(base, synthesis=self._with_model(base.synthesis, v), stream=False,
                            voice_label=f"{base.voice_label} \u00b7 IndexTTS-{v}") for v in ("2.0", "2.5")]
        folders = [self.version_folder(v) for v in ("2.0", "2.5")]
        back = self.version_folder()
        engine, lock, device, fp16 = self.engine, self._engine_lock, self.device, self.settings.fp16

        def work(job: Job, post: Callable) -> list[SynthesisResult]:
            results = []
            with _engine_turn(lock, job):
                try:
                    for folder, request in zip(folders, requests):
                        engine.load(folder, device=device, fp16=fp16)
                        results.append(engine.synthesize(request.synthesis, cancel=job.cancel,
                                                         on_progress=lambda p: post("progress", p)))
                finally:
                    if folders[-1] != back:
                        engine.load(back, device=device, fp16=fp16)
            return results

        def done(results: list[SynthesisResult]) -> None:
            self.results.add(HistoryEntry(request=requests[0], result=results[0]))
            self._job_done(requests[1], results[1])
            self._update_model_bar()
            self.status.set(f"A/B: IndexTTS-2.0 {results[0].duration:.1f} s, IndexTTS-2.5 {results[1].duration:.1f} s "
                            "of audio; both takes are in the history.")

        def failed(exc: BaseException) -> None:
            self._job_failed(exc)
            self._update_model_bar()

        self.results.begin_stream()
        self.job_started, self.last_progress = time.monotonic(), None
        self.stage.set("A/B: IndexTTS-2.0, then 2.5\u2026")
        self.job = self.worker.start("ab", work, done, failed, self._job_message)
        self.refresh_state()
        self._tick_timing()
        return self.job

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
        model_dir, device, fp16 = self.version_folder(), self.device, self.settings.fp16

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
            self.refresh_state()
            self._update_model_bar()
            self.text_panel.update_preview()
            self._stream_changed(self.results.streams_inside)  # the Beams note follows what the model can stream
            self._start_pending_voices()

        def failed(exc: BaseException) -> None:
            self.load_job = None
            self.pending_voices.clear()
            self.refresh_state()
            if isinstance(exc, EngineError):
                self.show_first_run(str(exc))
            else:
                self.status.set("Loading the models failed.")
                self.error("Loading the models", exc)

        self.load_job = self.worker.start("load", work, done, failed, on_message=lambda k, p: self._on_progress(p))
        self.refresh_state()

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
    @property
    def state(self) -> AppState:
        """What the window is doing: the one input to what is enabled."""
        if self.job is not None:
            return AppState.GENERATING
        if self.load_job is not None:
            return AppState.LOADING
        return AppState.READY if self.engine.loaded else AppState.NO_MODELS

    def refresh_state(self) -> None:
        """Enable the commands (menu items, shortcuts, their buttons) that work in the current state."""
        self.commands.refresh()

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
        settings = replace(self.advanced.get_settings(), stream=self.results.streams_inside)
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
        limits = self.engine.limits
        synthesis = self._with_model(synthesis, limits.version if limits is not None else "2.0")
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
            stream=bool(self.results.stream.get()),
        )

    def generate(self) -> Job | None:
        state = self.state
        if state is AppState.NO_MODELS:
            self.error("Generate", "The models are not loaded yet.")
            return None
        if state is not AppState.READY:
            return None
        try:
            request = self.build_request()
        except UserError as exc:
            self.error("Generate", exc)
            return None
        return self.start_job(request)

    def start_job(self, request: Request) -> Job:
        self.results.begin_stream()
        engine, lock = self.engine, self._engine_lock  # the worker must not hold the window (Tk objects)

        def work(job: Job, post: Callable) -> SynthesisResult:
            # One call, streaming or not: the engine's result (audio, warnings, errors) is used as it is.
            with _engine_turn(lock, job):
                return engine.synthesize(
                    request.synthesis,
                    on_progress=lambda p: post("progress", p),
                    cancel=job.cancel,
                    on_chunk=(lambda chunk: post("chunk", chunk)) if request.stream else None,
                )

        self.job_started = time.monotonic()
        self.last_progress = None
        self.progress.set(0)
        self.stage.set("Starting\u2026")
        self.status.set("Generating\u2026")
        self.job = self.worker.start(
            "synthesis", work, lambda r: self._job_done(request, r), self._job_failed, self._job_message
        )
        self.refresh_state()
        self._tick_timing()
        self.save_state()
        return self.job

    def _on_progress(self, p: Progress) -> None:
        self.last_progress = p
        self.progress.set(max(0.0, min(1.0, p.fraction)) * 100)
        seg = f" \u2014 segment {p.segment}/{p.segments}" if p.segments else ""
        self.stage.set(f"{p.stage}{seg}")

    def _job_message(self, kind: str, payload: object) -> None:
        if kind == "progress" and isinstance(payload, Progress):
            self._on_progress(payload)
        elif kind == "chunk" and isinstance(payload, AudioChunk):
            self.results.play_chunk(payload)

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
        self.results.add(HistoryEntry(request=request, result=result))
        self.refresh_state()  # after the result is in: "Play" needs one
        took = time.monotonic() - self.job_started
        self.progress.set(100)
        self.stage.set("Done")
        self.timing.set(f"took {took:.1f} s")
        self.status.set(
            f"Generated {result.duration:.1f} s of audio in {took:.1f} s."
            + (" " + " ".join(result.warnings) if result.warnings else "")
        )
        self.results.end_stream(completed=True)
        self._start_pending_voices()

    def _job_failed(self, exc: BaseException) -> None:
        self.job = None
        self.refresh_state()
        self.progress.set(0)
        self.results.end_stream(completed=False)
        self.root.after_idle(self._start_pending_voices)
        if isinstance(exc, Cancelled):
            self.stage.set("Cancelled")
            self.status.set("Generation cancelled.")
            return
        self.stage.set("Failed")
        self.status.set("Generation failed.")
        self.error("Generate", exc)

    # --- presets, history and the saved state ---------------------------------------------------------------
    def snapshot(self) -> Preset:
        """The voice, emotion and generation settings of the window now, as an unnamed preset."""
        try:
            settings = self.advanced.get_settings().to_dict()
        except UserError:
            settings = GenerationSettings().to_dict()
        return Preset(
            name="", voice=self.voice_panel.voice_path.get(), emotion=self.emotion_panel.get_state(), settings=settings
        )

    def apply_preset(self, preset: Preset) -> None:
        problems = []
        if preset.voice:
            if Path(preset.voice).is_file():
                self.voice_panel.set_clip(preset.voice)
            else:
                problems.append(f"its voice clip {preset.voice} no longer exists")
        try:
            self.emotion_panel.set_state(preset.emotion)
        except (ValueError, TypeError) as exc:
            problems.append(f"its emotion settings are invalid ({exc})")
        self.advanced.set_settings(preset.settings)
        if problems:
            self.dialog(
                "warning",
                parent=self.root,
                title="Preset",
                message=f"Preset '{preset.name}' was loaded, but " + "; ".join(problems) + ".",
            )

    def regenerate(self, entry: HistoryEntry) -> Job | None:
        """Put a History entry's request back into the panels and run it again (the same seed: the same audio)."""
        request = entry.request
        self.text_panel.set_text(request.text)
        if Path(request.voice).is_file():
            self.voice_panel.set_clip(request.voice, label=request.voice_label)
        self.emotion_panel.set_state(request.emotion_state)
        self.advanced.set_settings(request.settings.to_dict())
        if self.state is not AppState.READY:
            return None
        return self.start_job(request)  # frozen: the same request, the same seed

    def history_to_preset(self, entry: HistoryEntry) -> Path | None:
        request = entry.request
        return self.preset_bar.save_dialog(
            Preset(
                name="", voice=request.voice, emotion=dict(request.emotion_state), settings=request.settings.to_dict()
            )
        )

    def output_dir(self) -> Path:
        return Path(self.settings.output_dir) if self.settings.output_dir else self.dirs.outputs

    def save_state(self) -> None:
        if not self.persist:
            return
        state = {
            "text": self.text_panel.get_text(),
            **asdict(self.snapshot()),
            "advanced_open": bool(self.advanced.open.get()),
            "preset": self.preset_bar.name.get(),
            "streaming": bool(self.results.stream.get()),
        }
        state.pop("name", None)
        try:
            self.files.save_state(state)
        except OSError:
            log.warning("could not save the last-used state", exc_info=True)

    def restore_state(self) -> None:
        state = self.files.load_state()
        if not state:
            return
        try:
            self.text_panel.set_text(str(state.get("text", "")))
            voice = state.get("voice") or ""
            if voice and Path(voice).is_file():
                self.voice_panel.set_clip(voice)
            self.emotion_panel.set_state(state.get("emotion") or {})
            self.advanced.set_settings(state.get("settings") or {})
            self.advanced.set_open(bool(state.get("advanced_open", False)))
            self.preset_bar.name.set(str(state.get("preset", "")))
            self.results.stream.set(bool(state.get("streaming", self.settings.streaming)))
        except (ValueError, TypeError) as exc:
            log.warning("last-used state partly ignored: %s", exc)
            self.files.notes.append(f"The last-used state could not be fully restored ({exc}).")

    def _save_settings(self) -> None:
        if self.persist:
            try:
                self.files.save_settings(self.settings)
            except OSError as exc:
                self.error("Settings", exc, prefix="Could not save the settings: ")

    # --- tools ------------------------------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        return SettingsDialog(self.root, self.settings, self.dialog, self.apply_settings)

    def apply_settings(self, new: AppSettings) -> None:
        reload = (new.model_dir, new.device, new.fp16) != (
            self.settings.model_dir,
            self.settings.device,
            self.settings.fp16,
        )
        if new.output_device != self.settings.output_device:
            self.results.reset_player()
        if new.theme != self.settings.theme:
            self.set_theme(new.theme)
        self.settings = new
        self.results.stream.set(new.streaming)
        self.results.stream_inside.set(new.stream_inside)
        self.model_dir = Path(new.model_dir) if new.model_dir else self.model_dir
        self._save_settings()
        if reload and self.state is not AppState.GENERATING:
            self.device_override = None  # the user chose a device in Settings: it now wins over --device
            self.load_engine()

    def _stream_changed(self, inside: bool) -> None:
        """'Stream inside segments' (with 'Play while generating'): the beams field says one beam; remembered.
        A model that renders whole segments only (IndexTTS-2.5: the engine says so in a warning) keeps its beams."""
        limits = self.engine.limits
        self.advanced.note_one_beam(inside and (limits is None or limits.streaming))
        chosen = bool(self.results.stream_inside.get())
        if chosen != self.settings.stream_inside:
            self.settings = replace(self.settings, stream_inside=chosen)
            self._save_settings()

    def _remember_format(self, fmt: str) -> None:
        self.settings = replace(self.settings, save_format=fmt)
        self._save_settings()

    def _remember_window(self) -> None:
        if self.persist and self.root.winfo_exists():
            geometry = window_mod.current(self.root)
            sash = int(self.panes.sashpos(0)) if len(self.panes.panes()) > 1 else 0
            self.settings = replace(self.settings, window=geometry or self.settings.window, sash=sash)
            self._save_settings()

    # --- pronunciation dictionary ---------------------------------------------------------------------------
    def open_dictionary(self) -> DictionaryDialog:
        return DictionaryDialog(
            self.root, self.pronunciation, dialog=self.dialog, report_error=self.error, on_saved=self.apply_dictionary
        )

    def use_dictionary(self) -> None:
        """Give the engine the saved dictionary (at start); a broken file is said once and left as it is."""
        try:
            entries = self.pronunciation.load()
        except DictionaryError as exc:
            self.error("Pronunciation dictionary", exc)
            return
        from desktop.pronunciation import to_glossary

        self.apply_dictionary(to_glossary(entries), announce=False)

    def apply_dictionary(self, glossary: Glossary, announce: bool = True) -> None:
        """The engine speaks with ``glossary`` from the next job on; the segment preview shows it now, and views
        with cached results (the Projects view) hear ``<<DictionaryChanged>>``: their takes that use a changed
        entry become stale, the others stay current."""
        setter = getattr(self.engine, "set_glossary", None)
        if setter is None:
            log.info("this engine has no pronunciation dictionary")
            return
        try:
            setter(glossary)
        except EngineError as exc:
            self.error("Pronunciation dictionary", exc)
            return
        self.text_panel.update_preview()
        project = self.projects.project
        if project is not None:
            project.use_glossary(getattr(self.engine, "glossary_terms", None))
        self.root.event_generate("<<DictionaryChanged>>")
        if announce:
            self.status.set(f"Pronunciation dictionary saved ({len(glossary)} terms).")

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

    def _voice_recorded(self, voice: Voice) -> None:
        self.voice_panel.refresh()
        self.voice_panel.use_voice(voice)
        self.status.set(f"Voice '{voice.name}' saved and selected.")
        self.prepare_voice(voice)

    def prepare_voice(self, voice: Voice) -> Job | None:
        """Compute (and let the engine cache) a new library voice's conditioning now, not at the first Generate.

        Never two jobs on the engine at once: while a synthesis (or a load) runs, the voice is queued and prepared
        when it ends.
        """
        state = self.state
        if state is AppState.NO_MODELS:
            return None
        if state is not AppState.READY:
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
        if self.state in (AppState.GENERATING, AppState.LOADING) or not self.pending_voices:
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
        if not self.projects.confirm_leave():  # a render or export is running and the user keeps it
            return
        self.save_state()
        self._remember_window()
        if self.job is not None:
            self.job.cancel.set()
        self.results.reset_player()
        self.local_api.close()
        self.projects.shutdown()
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
        ok = root.winfo_ismapped() and app.generate_button.winfo_exists() and app.results.waveform.winfo_ismapped()
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
