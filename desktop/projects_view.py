"""The Projects view: a tab beside the single-text studio for scripts, books and subtitles (:mod:`core.project`).

A project is a folder; every edit is saved to its ``project.json`` at once by :class:`core.project.Project`
(autosave), so nothing typed is lost. The view shows the lines in a :class:`~desktop.widgets.projects.LineTable`,
imports text, Markdown, scripts, SRT and WebVTT into a new project under ``<data>/projects``, renders the lines
without a current take in the app's worker through the app's engine queue (one turn per line, shared with studio
and local-API jobs: :class:`desktop.engine_turns.GatedEngine`), and exports to every format of
:mod:`core.project.export`. Project events arrive on the render thread and reach the table through a
:class:`~desktop.mailbox.Mailbox`, one row per changed line.

A project another app instance has open is opened read-only (the user is told why); closing the window or opening
another project while a render or export runs asks first.
"""

from __future__ import annotations

import logging
import re
import tkinter as tk
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from tkinter import ttk
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import soundfile as sf

from core.api import EMOTION_NAMES, Emotion, EngineError, GenerationSettings
from core.project import Project, ProjectEvent
from core.project.export import EXTENSIONS, ExportReport, export
from core.project.importers import FORMATS, import_project
from core.project.render import LineResult, RenderProgress, RenderReport, render
from core.voices import VoiceCatalog
from desktop.commands import AppState
from desktop.dialogs import UserError
from desktop.engine_turns import GatedEngine
from desktop.jsonstore import read_object_or_set_aside, write_json
from desktop.mailbox import Mailbox
from desktop.player import Player
from desktop.widgets.emotion import EmotionPanel
from desktop.widgets.projects import FailureLog, LineTable, RenderBar
from desktop.worker import Job

if TYPE_CHECKING:
    from core.project import Line
    from desktop.app import StudioApp

log = logging.getLogger(__name__)

MenuState = Literal["normal", "active", "disabled"]

IMPORT_FILETYPES = [("Texts, scripts and subtitles", "*.txt *.md *.markdown *.script *.srt *.vtt"),
                    ("All files", "*")]
EXPORT_FILETYPES = [(ext[1:].upper(), f"*{ext}") for ext in EXTENSIONS]
MAX_RECENT = 10
PLAY_AHEAD_S = 6.0  # play-from keeps this much audio queued ahead of the playback position
TEXT_CELL = 240  # characters of a line's text shown in its cell


def emotion_words(emotion: Emotion) -> str:
    """A few words for the emotion cell."""
    if emotion.mode == "vector" and emotion.vector:
        top = max(range(len(emotion.vector)), key=lambda i: emotion.vector[i] if emotion.vector else 0.0)
        return f"{EMOTION_NAMES[top]} {emotion.vector[top] * emotion.alpha:.2f}"
    if emotion.mode == "audio" and emotion.audio is not None:
        return f"clip {emotion.audio.name}"
    if emotion.mode == "text":
        return f"\u201c{emotion.text[:24]}\u201d" if emotion.text else "from the text"
    return "\u2014"


def install_tab(studio: ttk.Frame, page: ttk.Frame, studio_label: str = "Studio",
                label: str = "Projects") -> ttk.Notebook:
    """Put the studio's main content and ``page`` side by side as tabs of one notebook in the studio frame (the
    expanding pack slave becomes the first tab; anything else packed there stays around both)."""
    slaves = studio.pack_slaves()
    main = next(w for w in slaves if str(w.pack_info().get("expand")) in ("1", "True", "true"))
    info = main.pack_info()
    notebook = ttk.Notebook(studio)
    notebook.pack(fill="both", expand=True, padx=info.get("padx", 0), pady=info.get("pady", 0))
    if main is not slaves[-1]:
        notebook.pack_configure(before=slaves[slaves.index(main) + 1])
    notebook.add(main, text=studio_label)
    notebook.add(page, text=label)
    for tab in (main, page):  # siblings made before the notebook: raise them above it, or it hides them
        tab.lift(notebook)
    return notebook


class RecentProjects:
    """The last opened project folders (``<config>/projects.json``), newest first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data, _note = read_object_or_set_aside(path)
        self.folders = [str(f) for f in data.get("recent", []) if isinstance(f, str)][:MAX_RECENT]

    def add(self, folder: Path) -> None:
        text = str(folder)
        self.folders = [text, *[f for f in self.folders if f != text]][:MAX_RECENT]
        try:
            write_json(self.path, {"recent": self.folders})
        except OSError:
            log.warning("could not save the recent projects list", exc_info=True)


class ProjectsView:
    """The Projects tab of one window; ``register(add)`` adds the Project menu to the command table."""

    def __init__(self, app: StudioApp) -> None:
        self.app = app
        self.root = app.root
        self.project: Project | None = None
        self.job: Job | None = None  # import, render or export
        self.job_kind = ""
        self.report: RenderReport | None = None
        self.exported: ExportReport | None = None
        self.projects_root = app.dirs.data / "projects"
        self.recent = RecentProjects(app.dirs.config / "projects.json")
        self.player: Player | None = None
        self._play_queue: Iterator[np.ndarray] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.events: Mailbox[ProjectEvent] = Mailbox(self.root, self._on_events, poll_ms=50)
        self.page = ttk.Frame(app.studio, padding=6)
        self._build(self.page)
        self.notebook = install_tab(app.studio, self.page)
        # a changed pronunciation dictionary makes the takes of the lines using a changed entry stale
        self.root.bind("<<DictionaryChanged>>", lambda _e: self.events.post(ProjectEvent("project")), add="+")

    # ------------------------------------------------------------------------------------------ layout

    def _build(self, page: ttk.Frame) -> None:
        head = ttk.Frame(page)
        head.pack(fill="x")
        self.title = tk.StringVar(page, value="No project open. Import a text, script or subtitles, or open one.")
        ttk.Label(head, textvariable=self.title).pack(side="left")
        bar = ttk.Frame(page, padding=(0, 4))
        bar.pack(fill="x")
        self.buttons: dict[str, ttk.Button] = {}
        for name, text in (("import", "Import\u2026"), ("open", "Open\u2026")):
            self.buttons[name] = ttk.Button(bar, text=text)
            self.buttons[name].pack(side="left", padx=(0, 4))
        self.recent_button = ttk.Menubutton(bar, text="Recent")
        self.recent_menu = tk.Menu(self.recent_button, tearoff=False, postcommand=self._fill_recent)
        self.recent_button.configure(menu=self.recent_menu)
        self.recent_button.pack(side="left", padx=(0, 4))
        for name, text in (("export", "Export\u2026"), ("render", "Render"), ("stop", "Stop")):
            self.buttons[name] = ttk.Button(bar, text=text)
            self.buttons[name].pack(side="left", padx=(8 if name == "export" else 0, 4))
        bar = ttk.Frame(page, padding=(0, 0, 0, 4))  # the line actions: a row of their own, to fit a laptop screen
        bar.pack(fill="x")
        self.speaker = tk.StringVar(page)
        self.speaker_box = ttk.Combobox(bar, textvariable=self.speaker, width=14, postcommand=self._fill_speakers)
        self.speaker_box.pack(side="left")
        actions: tuple[tuple[str, str, Callable[[], object]], ...] = (
            ("assign", "Set speaker", lambda: self.assign_speaker(self.speaker.get())),
            ("emotion", "Emotion\u2026", self.open_emotion_dialog),
            ("regenerate", "Regenerate", self.regenerate),
            ("lock", "Lock", self.toggle_lock),
            ("play", "Play", self.play_line),
            ("play_from", "Play from here", self.play_from),
        )
        for name, text, command in actions:
            self.buttons[name] = ttk.Button(bar, text=text, command=command)
            self.buttons[name].pack(side="left", padx=(4 if name != "assign" else 2, 0))
        panes = ttk.PanedWindow(page, orient="vertical")
        panes.pack(fill="both", expand=True)
        self.table = LineTable(panes, values=self.row_values, tags=self.row_tags, on_edit=self.edit_cell,
                               on_move=self.move_line, speakers=self.speakers, cell_text=self.cell_text,
                               on_menu=self._context_menu)
        self.failures = FailureLog(panes, on_pick=lambda line_id: self.table.select([line_id]))
        self.table.tree.bind("<Delete>", lambda _e: self.delete_lines() if self.table.selected() else None)
        panes.add(self.table, weight=5)
        panes.add(self.failures, weight=1)
        self.render_bar = RenderBar(page)
        self.render_bar.pack(fill="x", pady=(4, 0))

    def register(self, add: Callable[..., object]) -> None:
        """The Project menu (one command each); the toolbar buttons are attached to the same commands."""
        has, can_edit, idle = self.has_project, self.writable, lambda: self.job is None
        add("project_import", "Import text, script or subtitles\u2026", self.import_file, menu="Project",
            tester=idle)
        add("project_open", "Open project\u2026", self.open_dialog, menu="Project", tester=idle)
        add("project_save_as", "Save project as\u2026", self.save_as, menu="Project",
            tester=lambda: has() and idle())
        add("project_export", "Export project\u2026", self.export_dialog, menu="Project",
            tester=lambda: has() and idle())
        add("project_render", "Render project", self.render, menu="Project", separator_before=True,
            enabled_in={AppState.READY, AppState.GENERATING}, tester=can_edit)
        add("project_stop", "Stop rendering", self.cancel, menu="Project", tester=lambda: self.job is not None)
        add("project_close", "Close project", self.close_project, menu="Project", separator_before=True,
            tester=has)
        for button, command in (("import", "project_import"), ("open", "project_open"),
                                ("export", "project_export"), ("render", "project_render"),
                                ("stop", "project_stop")):
            self.app.commands.attach(self.buttons[button], command)

    # ------------------------------------------------------------------------------------------- state

    def has_project(self) -> bool:
        return self.project is not None

    def writable(self) -> bool:
        return self.project is not None and not self.project.read_only and self.job is None

    def _refresh(self) -> None:
        self.app.refresh_state()
        p = self.project
        edit = "normal" if p is not None and not p.read_only else "disabled"
        for name in ("assign", "emotion", "regenerate", "lock"):
            self.buttons[name].configure(state=edit)
        for name in ("play", "play_from"):
            self.buttons[name].configure(state="normal" if p is not None else "disabled")
        self.buttons["lock"].configure(text="Unlock" if self._selection_locked() else "Lock")
        if p is None:
            self.title.set("No project open. Import a text, script or subtitles, or open one.")
            return
        chapters = len(p.chapters())
        ro = "  (read-only: open in another window)" if p.read_only else ""
        self.title.set(f"{p.title or p.folder.name} \u2014 {len(p.lines)} lines, {chapters} chapter(s) "
                       f"\u2014 {p.folder}{ro}")

    def _selection_locked(self) -> bool:
        p, ids = self.project, self.table.selected()
        return p is not None and bool(ids) and all(p.line(i).locked for i in ids if _has(p, i))

    # ------------------------------------------------------------------------------------------- rows

    def row_values(self, line_id: str) -> Sequence[str]:
        p = self.project
        if p is None:
            return ()
        with p.lock:
            line = p.line(line_id)
            status = p.status(line)
            index = p.index_of(line_id)
        take = line.active_take
        text = " ".join(line.text.split())
        if len(text) > TEXT_CELL:
            text = text[:TEXT_CELL] + "\u2026"
        number = f"\u00a7 {index + 1}" if line.chapter else str(index + 1)
        duration = f"{take.duration:.2f} s" if take is not None else ""
        overrun = f"+{line.overrun:.2f} s" if line.overrun > 0 else ""
        return (number, line.speaker if not Path(line.speaker).suffix else Path(line.speaker).name,
                emotion_words(line.emotion), text, status, duration, overrun)

    def row_tags(self, line_id: str) -> tuple[str, ...]:
        p = self.project
        if p is None:
            return ()
        line = p.line(line_id)
        tags = []
        if line.error:
            tags.append("failed")
        if line.overrun > 0:
            tags.append("overrun")
        if line.chapter:
            tags.append("chapter")
        if line.locked:
            tags.append("locked")
        return tuple(tags)

    def cell_text(self, line_id: str, column: str) -> str:
        p = self.project
        if p is None:
            return ""
        line = p.line(line_id)
        return line.text if column == "text" else line.speaker

    def speakers(self) -> list[str]:
        """Speaker names: the project's voices, then the library's voices."""
        names = list(self.project.voices) if self.project is not None else []
        for entry in VoiceCatalog(self.app.dirs.voices).entries():
            if entry.name not in names:
                names.append(entry.name)
        return names

    def _fill_speakers(self) -> None:
        self.speaker_box.configure(values=self.speakers())

    def _show(self, project: Project) -> None:
        """Show an opened project (and say what the open noticed: a backup used, read-only, ...)."""
        self.project = project
        project.use_glossary(getattr(self.app.engine, "glossary_terms", None))  # statuses as a render sees them
        self._unsubscribe = project.subscribe(self.events.post)
        self.recent.add(project.folder)
        self.table.populate([line.id for line in project.lines])
        self.failures.clear()
        for line in project.lines:
            if line.error:
                self.failures.set_failure(line.id, line.error)
        self.render_bar.clear()
        self.notebook.select(self.page)
        self._refresh()
        if project.notices:
            self.app.dialog("warning", parent=self.root, title="Project", message="\n".join(project.notices))
            project.notices.clear()

    def _on_events(self, events: list[ProjectEvent]) -> None:
        p = self.project
        if p is None:
            return
        ids: dict[str, None] = {}
        if any(e.kind == "structure" for e in events):
            selected = self.table.selected()
            self.table.populate([line.id for line in p.lines])
            self.table.select(selected)
        elif any(e.kind == "project" for e in events):
            self.table.update_rows([line.id for line in p.lines])
        else:
            for event in events:
                ids.update(dict.fromkeys(event.ids))
            present = [i for i in ids if _has(p, i)]
            self.table.update_rows(present)
            for line_id in present:
                self.failures.set_failure(line_id, p.line(line_id).error)
        self._refresh()

    def flush_events(self) -> None:
        """Apply the project events that arrived (normally every 50 ms)."""
        self.events.drain()

    # ---------------------------------------------------------------------------------- open and import

    def confirm_leave(self) -> bool:
        """Before the project is closed (another opened, the window closed): a pending edit is saved; a running
        import, render or export is stopped if the user agrees."""
        if not self.table.commit_edit():
            return False
        if self.job is None:
            return True
        what = {"render": "A render", "export": "An export", "import": "An import"}.get(self.job_kind, "A job")
        if not self.app.dialog("yesno", parent=self.root, title="Project",
                               message=f"{what} is running. Stop it? (Rendered lines are kept.)"):
            return False
        self._stop_job()
        return True

    def _stop_job(self, timeout: float = 10.0) -> None:
        job, self.job = self.job, None
        if job is not None:
            job.cancel.set()
            if job.thread is not None:
                job.thread.join(timeout)

    def close_project(self) -> bool:
        if not self.confirm_leave():
            return False
        self._close()
        self._refresh()
        return True

    def _close(self) -> None:
        self.stop_playback()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.project is not None:
            self.project.close()
            self.project = None
        self.table.populate([])
        self.failures.clear()
        self.render_bar.clear()

    def open_dialog(self) -> Project | None:
        folder = self.app.dialog("directory", parent=self.root, title="Open a project folder",
                                 initialdir=str(self.projects_root))
        return self.open_project(Path(folder)) if folder else None

    def open_project(self, folder: Path) -> Project | None:
        current = self.project
        if current is not None and not current.read_only and current.folder.resolve() == Path(folder).resolve():
            self.notebook.select(self.page)  # already open here (opening it again would find it locked)
            return current
        if not self.confirm_leave():
            return None
        try:
            project = Project.open(folder)
        except EngineError as exc:
            self.app.error("Open project", exc)
            return None
        self._close()
        self._show(project)
        return project

    def _fill_recent(self) -> None:
        self.recent_menu.delete(0, "end")
        if not self.recent.folders:
            self.recent_menu.add_command(label="(none yet)", state="disabled")
        for folder in self.recent.folders:
            self.recent_menu.add_command(label=folder, command=partial(self.open_project, Path(folder)))

    def _voices_for_import(self) -> tuple[dict[str, str], str | None]:
        """Library voices by name (script speakers with a library name get that voice), and the studio's voice
        for every other speaker (None when the studio has none)."""
        voices = {e.name: str(e.clip) for e in VoiceCatalog(self.app.dirs.voices).entries()}
        clip = self.app.voice_panel.voice_path.get()
        return voices, clip if clip and Path(clip).is_file() else None

    def _settings(self) -> GenerationSettings:
        try:
            return self.app.advanced.get_settings()
        except UserError:
            return GenerationSettings()

    def new_folder(self, stem: str) -> Path:
        base = re.sub(r"[^\w\-]+", "-", stem).strip("-") or "project"
        folder, n = self.projects_root / base, 1
        while folder.exists():
            n += 1
            folder = self.projects_root / f"{base}-{n}"
        return folder

    def import_file(self, path: str | Path | None = None, fmt: str | None = None) -> Job | None:
        """Import a file into a new project (in the worker); the studio's voice speaks every speaker the voice
        library does not name."""
        if path is None:
            path = self.app.dialog("open_file", parent=self.root, title="Import a text, script or subtitles",
                                   filetypes=IMPORT_FILETYPES)
            if not path:
                return None
        if fmt is not None and fmt not in FORMATS:
            raise ValueError(fmt)
        if not self.confirm_leave():
            return None
        source = Path(path)
        voices, default = self._voices_for_import()
        folder, settings = self.new_folder(source.stem), self._settings()

        def work(job: Job, post: Callable[[str, Any], None]) -> Project:
            return import_project(source, folder, fmt, voices=voices, default_voice=default, settings=settings)

        def done(project: Project) -> None:
            self.job = None
            notes, project.notices[:] = "; ".join(project.notices), []  # the importer's notes: not warnings
            self._close()
            self._show(project)
            self.app.status.set(f"Imported {len(project.lines)} lines from {source.name} into {project.folder}"
                                + (f" ({notes})." if notes else "."))

        def failed(exc: BaseException) -> None:
            self.job = None
            self._refresh()
            if default is None and isinstance(exc, EngineError) and "no voice" in str(exc):
                self.app.error("Import", f"{exc} In the app: choose a voice in the studio first (it speaks every "
                                         "speaker the voice library does not name), then import again.")
            else:
                self.app.error("Import", exc)

        return self._start("import", work, done, failed)

    def _start(self, kind: str, work: Callable[[Job, Callable[[str, Any], None]], Any],
               done: Callable[[Any], None], failed: Callable[[BaseException], None],
               on_message: Callable[[str, Any], None] | None = None) -> Job:
        self.job_kind = kind
        self.job = self.app.worker.start(f"project-{kind}", work, done, failed, on_message)
        self._refresh()
        return self.job

    def save_as(self, folder: str | Path | None = None) -> Project | None:
        p = self.project
        if p is None:
            return None
        if folder is None:
            folder = self.app.dialog("directory", parent=self.root, title="Save the project as (an empty folder)",
                                     initialdir=str(self.projects_root))
            if not folder:
                return None
        if not self.table.commit_edit():
            return None
        try:
            copy = p.save_as(Path(folder))
        except EngineError as exc:
            self.app.error("Save project as", exc)
            return None
        self._close()
        self._show(copy)
        self.app.status.set(f"The project is now saved in {copy.folder}.")
        return copy

    # ------------------------------------------------------------------------------------------- edits

    def _edit(self, title: str, action: Callable[[Project], object]) -> bool:
        p = self.project
        if p is None:
            return False
        try:
            action(p)
        except EngineError as exc:
            self.app.error(title, exc)
            return False
        self.flush_events()
        return True

    def _ids(self, ids: Sequence[str] | None) -> list[str]:
        chosen = list(ids) if ids is not None else self.table.selected()
        if not chosen:
            self.app.error("Project", "Select one or more lines first.")
        return chosen

    def edit_cell(self, line_id: str, column: str, text: str) -> bool:
        if column == "speaker":
            return self.assign_speaker(text, [line_id])
        p = self.project
        if p is not None and text.strip() == p.line(line_id).text:
            return True
        return self._edit("Edit line", lambda p: p.set_text(line_id, text))

    def move_line(self, line_id: str, index: int) -> None:
        self._edit("Move line", lambda p: p.move_line(line_id, index))

    def assign_speaker(self, name: str, ids: Sequence[str] | None = None) -> bool:
        """Give the lines (the selection) this speaker; a library voice joins the project's voices."""
        chosen = self._ids(ids)
        name = name.strip()
        if not chosen or self.project is None:
            return False
        library = {e.name: e.clip for e in VoiceCatalog(self.app.dirs.voices).entries()}

        def action(p: Project) -> None:
            if name in library and name not in p.voices:
                p.set_voice(name, library[name])
            p.assign(chosen, speaker=name)

        return self._edit("Speaker", action)

    def assign_emotion(self, emotion: Emotion, ids: Sequence[str] | None = None) -> bool:
        chosen = self._ids(ids)
        return bool(chosen) and self._edit("Emotion", lambda p: p.assign(chosen, emotion=emotion))

    def toggle_lock(self, ids: Sequence[str] | None = None) -> bool:
        chosen = self._ids(ids)
        if not chosen:
            return False
        lock = not self._selection_locked() if ids is None else not all(
            self.project is not None and self.project.line(i).locked for i in chosen)

        def action(p: Project) -> None:
            for line_id in chosen:
                p.set_locked(line_id, lock)

        return self._edit("Lock", action)

    def choose_take(self, line_id: str, n: int) -> bool:
        return self._edit("Take", lambda p: p.choose_take(line_id, n))

    def regenerate(self, ids: Sequence[str] | None = None) -> Job | None:
        """A new take of each chosen line (earlier takes are kept), rendered now."""
        chosen = self._ids(ids)
        if not chosen or not self._edit("Regenerate", lambda p: p.regenerate(chosen)):
            return None
        return self.render(chosen)

    def set_chapter(self, line_id: str, title: str | None = None) -> bool:
        """Start a chapter at this line (asked for when ``title`` is None; empty: no chapter starts here)."""
        p = self.project
        if p is None:
            return False
        if title is None:
            title = self.app.dialog("string", parent=self.root, title="Chapter",
                                    prompt="Title of the chapter that starts at this line (empty: none):",
                                    initialvalue=p.line(line_id).chapter or "")
            if title is None:
                return False
        return self._edit("Chapter", lambda proj: proj.set_chapter(line_id, title))

    def set_pause(self, ids: Sequence[str] | None = None, pause_ms: int | None = None) -> bool:
        """The pause after each chosen line, in milliseconds (asked for when ``pause_ms`` is None)."""
        chosen = self._ids(ids)
        if not chosen or self.project is None:
            return False
        if pause_ms is None:
            answer = self.app.dialog("string", parent=self.root, title="Pause",
                                     prompt=f"Pause after {len(chosen)} line(s), in milliseconds:",
                                     initialvalue=str(self.project.line(chosen[0]).pause_ms))
            if answer is None:
                return False
            try:
                pause_ms = int(str(answer).strip())
            except ValueError:
                self.app.error("Pause", f"The pause is a whole number of milliseconds (got {answer!r}).")
                return False
        value = pause_ms

        def action(proj: Project) -> None:
            for line_id in chosen:
                proj.set_pause(line_id, value)

        return self._edit("Pause", action)

    def use_studio_settings(self, ids: Sequence[str] | None = None) -> bool:
        """The chosen lines get the studio's Advanced settings (those that differ from the project's, seed
        included): the studio is where a line's sound is tried out first."""
        chosen = self._ids(ids)
        p = self.project
        if not chosen or p is None:
            return False
        try:
            studio = self.app.advanced.get_settings().to_dict()
        except UserError as exc:
            self.app.error("Line settings", exc)
            return False
        base = p.settings.to_dict()
        changed = {k: v for k, v in studio.items() if k != "seed" and v != base.get(k)}

        def action(proj: Project) -> None:
            for line_id in chosen:
                proj.set_line_settings(line_id, changed)
                if studio.get("seed") is not None:
                    proj.set_seed(line_id, int(studio["seed"]))

        return self._edit("Line settings", action)

    def add_line(self, after: str | None = None, text: str | None = None) -> bool:
        """A new line after ``after`` (the first selected; the end without a selection), with that line's speaker."""
        p = self.project
        if p is None:
            return False
        anchor = after or next(iter(self.table.selected()), None)
        if text is None:
            text = self.app.dialog("string", parent=self.root, title="New line", prompt="Text of the new line:")
            if text is None:
                return False
        index = p.index_of(anchor) + 1 if anchor else len(p.lines)
        speaker = p.line(anchor).speaker if anchor else (next(iter(p.voices), "") or self.speaker.get())
        return self._edit("New line", lambda proj: proj.insert_line(index, text, speaker))

    def delete_lines(self, ids: Sequence[str] | None = None) -> bool:
        """Remove the chosen lines after asking (their take files stay in the folder)."""
        chosen = self._ids(ids)
        if not chosen or not self.app.dialog("yesno", parent=self.root, title="Delete lines",
                                             message=f"Delete {len(chosen)} line(s) from the project?"):
            return False
        return self._edit("Delete lines", lambda proj: proj.remove_lines(chosen))

    def open_emotion_dialog(self) -> tk.Toplevel | None:
        chosen = self._ids(None)
        if not chosen:
            return None
        top = tk.Toplevel(self.root)
        top.title("Emotion of the selected lines")
        top.transient(self.root)
        panel = EmotionPanel(top, pick_clip=self.app._pick_emotion_clip)
        panel.pack(fill="both", expand=True, padx=8, pady=8)

        def apply() -> None:
            if self.assign_emotion(panel.to_emotion(), chosen):
                top.destroy()

        ttk.Button(top, text=f"Apply to {len(chosen)} line(s)", command=apply).pack(pady=(0, 8))
        return top

    # ------------------------------------------------------------------------------------------ render

    def render(self, only: Sequence[str] | None = None) -> Job | None:
        """Render the lines without a current take (or only these) in the worker, one engine turn per line."""
        p = self.project
        if p is None or self.job is not None:
            return None
        if not self.table.commit_edit():
            return None
        engine = GatedEngine(self.app.engine, self.app._engine_lock, "project")
        ids = list(only) if only is not None else None
        self.report = None

        def work(job: Job, post: Callable[[str, Any], None]) -> RenderReport:
            return render(p, engine, only=ids, cancel=job.cancel, on_progress=lambda pr: post("progress", pr),
                          on_line=lambda r: post("line", r))

        def done(report: RenderReport) -> None:
            self.job, self.report = None, report
            self.flush_events()
            rtf = f", RTF {report.engine_seconds / report.audio_seconds:.2f}" if report.audio_seconds else ""
            what = "Render stopped" if report.cancelled else "Render finished"
            if engine.reloaded:
                what = "Render stopped: the models were reloaded, render again to use them"
            self.app.status.set(f"{what}: {report.rendered} line(s) rendered, {report.current} already current, "
                                f"{len(report.failed)} failed ({report.audio_seconds:.1f} s of audio in "
                                f"{report.seconds:.1f} s{rtf}).")
            self._refresh()

        def failed(exc: BaseException) -> None:
            self.job = None
            self.flush_events()
            self._refresh()
            self.render_bar.stage.set("Stopped")
            self.app.error("Render", exc)

        self.render_bar.show(0, 0, 0.0, "Waiting for the engine\u2026", None, None)
        return self._start("render", work, done, failed, self._render_message)

    def _render_message(self, kind: str, payload: object) -> None:
        if kind == "progress" and isinstance(payload, RenderProgress):
            stage = payload.stage if payload.line_id is None else f"line {payload.index + 1}: {payload.stage}"
            self.render_bar.show(payload.done, payload.total, payload.fraction, stage, payload.eta, payload.rtf)
        elif kind == "line" and isinstance(payload, LineResult):
            self.failures.set_failure(payload.line_id, payload.error if payload.outcome == "failed" else None)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel.set()
            self.render_bar.stage.set("Stopping\u2026")

    # ------------------------------------------------------------------------------------------ export

    def export_dialog(self) -> Job | None:
        p = self.project
        if p is None:
            return None
        path = self.app.dialog("save_file", parent=self.root, title="Export the project",
                               filetypes=EXPORT_FILETYPES, defaultextension=".wav",
                               initialfile=f"{p.title or p.folder.name}.wav")
        if not path:
            return None
        chapters = self._selected_chapters()
        if chapters is not None and not self.app.dialog(
                "yesno", parent=self.root, title="Export",
                message=f"Export only the {len(chapters)} chapter(s) of the selected lines? (No: the whole project.)"):
            chapters = None
        return self.export(Path(path), chapters=chapters)

    def _selected_chapters(self) -> list[int] | None:
        """The chapters holding the selected lines, when that is not every chapter."""
        p, ids = self.project, self.table.selected()
        if p is None or not ids:
            return None
        all_chapters = p.chapters()
        picked = {p.index_of(i) for i in ids}
        chosen = [c.index for c in all_chapters if any(c.first <= k < c.first + c.count for k in picked)]
        return chosen if 0 < len(chosen) < len(all_chapters) else None

    def export(self, out: Path, *, chapters: Sequence[int] | None = None) -> Job | None:
        """Export to ``out`` (the format follows the extension) in the worker; the file dialog has already asked
        before replacing a file."""
        p = self.project
        if p is None or self.job is not None:
            return None
        self.exported = None

        def work(job: Job, post: Callable[[str, Any], None]) -> ExportReport:
            return export(p, out, chapters=chapters, overwrite=True, cancel=job.cancel,
                          on_progress=lambda pr: post("progress", pr))

        def message(kind: str, payload: Any) -> None:
            self.render_bar.show(payload.segment, payload.segments, payload.fraction, "Exporting", None, None)

        def done(report: ExportReport) -> None:
            self.job, self.exported = None, report
            extra = f" and {report.extra}" if report.extra else ""
            self.render_bar.stage.set("Exported")
            self.app.status.set(f"Exported {report.lines} lines ({report.seconds:.1f} s) to {report.path}{extra}.")
            self._refresh()

        def failed(exc: BaseException) -> None:
            self.job = None
            self._refresh()
            self.app.error("Export", exc)

        return self._start("export", work, done, failed, message)

    # ---------------------------------------------------------------------------------------- playback

    def _player(self) -> Player:
        self.app.results.stop()  # one thing plays at a time
        if self.player is None:
            self.player = Player(self.app.settings.output_device)
        return self.player

    def _take_audio(self, line: Line) -> np.ndarray | None:
        p, take = self.project, line.active_take
        if p is None or take is None:
            return None
        audio, _rate = sf.read(str(p.folder / take.file), dtype="int16", always_2d=False)
        return np.asarray(audio)

    def play_line(self, line_id: str | None = None) -> bool:
        """Play the active take of a line (the first selected)."""
        p = self.project
        chosen = [line_id] if line_id else self._ids(None)[:1]
        if p is None or not chosen:
            return False
        line = p.line(chosen[0])
        try:
            audio = self._take_audio(line)
            if audio is None:
                self.app.error("Play", f"Line {line.id} has no take yet; render it first.")
                return False
            player = self._player()
            self._play_queue = None
            player.load(audio, line.active_take.sample_rate if line.active_take else 22050)
            player.play()
        except (UserError, OSError, RuntimeError) as exc:
            self.app.error("Play", exc)
            return False
        return True

    def _sequence(self, start: int) -> Iterator[np.ndarray]:
        """The takes from line ``start`` on, with their pauses (timed lines padded to their cue); lines without a
        take are skipped."""
        p = self.project
        if p is None:
            return
        for line in list(p.lines[start:]):
            take = line.active_take
            audio = self._take_audio(line) if take is not None else None
            if audio is None or take is None:
                continue
            yield audio
            slot = (line.slot_ms or 0) * take.sample_rate // 1000
            pad = max(0, slot - len(audio)) + line.pause_ms * take.sample_rate // 1000
            if pad:
                yield np.zeros(pad, dtype=np.int16)

    def play_from(self, line_id: str | None = None) -> bool:
        """Play from a line (the first selected) to the end, reading the takes as playback goes."""
        p = self.project
        chosen = [line_id] if line_id else self._ids(None)[:1]
        if p is None or not chosen:
            return False
        chunks = self._sequence(p.index_of(chosen[0]))
        try:
            first = next(chunks, None)
            if first is None:
                self.app.error("Play", "No line from here on has a take yet; render the project first.")
                return False
            player = self._player()
            player.load(first, self._rate(), open_ended=True)
            self._play_queue = chunks
            self._feed()
            player.play()
        except (UserError, OSError, RuntimeError) as exc:
            self.app.error("Play", exc)
            return False
        return True

    def _rate(self) -> int:
        p = self.project
        take = next((line.active_take for line in p.lines if line.active_take), None) if p else None
        return take.sample_rate if take is not None else 22050

    def _feed(self) -> None:
        """Keep the player :data:`PLAY_AHEAD_S` ahead while playing from a line."""
        player, chunks = self.player, self._play_queue
        if player is None or chunks is None:
            return
        try:
            while player.duration - player.position < PLAY_AHEAD_S:
                chunk = next(chunks, None)
                if chunk is None:
                    player.append(np.zeros(0, dtype=np.int16), self._rate(), last=True)
                    self._play_queue = None
                    return
                player.append(chunk, self._rate())
        except (OSError, RuntimeError) as exc:
            self._play_queue = None
            player.close_stream_input()
            self.app.error("Play", exc)
            return
        self.root.after(250, self._feed)

    def stop_playback(self) -> None:
        self._play_queue = None
        if self.player is not None:
            self.player.stop()

    # ------------------------------------------------------------------------------------------ context menu

    def _context_menu(self, event: tk.Event) -> None:
        p = self.project
        line_id = self.table.tree.identify_row(event.y)
        if p is None or not line_id:
            return
        if line_id not in self.table.tree.selection():
            self.table.select([line_id])
        menu = self.line_menu(line_id)
        menu.tk_popup(event.x_root, event.y_root)

    def line_menu(self, line_id: str) -> tk.Menu:
        """Play, play from here, regenerate, lock, the takes (the active one checked), edit."""
        assert self.project is not None
        line = self.project.line(line_id)
        menu = tk.Menu(self.table, tearoff=False)
        ro: MenuState = "disabled" if self.project.read_only else "normal"
        menu.add_command(label="Play", command=lambda: self.play_line(line_id))
        menu.add_command(label="Play from here", command=lambda: self.play_from(line_id))
        menu.add_separator()
        menu.add_command(label="Regenerate (new take)", command=lambda: self.regenerate(self.table.selected()),
                         state="disabled" if line.locked else ro)
        menu.add_command(label="Unlock" if line.locked else "Lock", command=self.toggle_lock, state=ro)
        takes = tk.Menu(menu, tearoff=False)
        active = tk.IntVar(menu, value=line.active or 0)
        for take in line.takes:
            takes.add_radiobutton(label=f"Take {take.n} ({take.duration:.2f} s, seed {take.seed})", value=take.n,
                                  variable=active, command=partial(self.choose_take, line_id, take.n), state=ro)
        menu.add_cascade(label="Takes", menu=takes, state="normal" if line.takes else "disabled")
        menu.add_separator()
        menu.add_command(label="Edit text", command=lambda: self.table.begin_edit(line_id, "text"), state=ro)
        menu.add_command(label="Emotion\u2026", command=self.open_emotion_dialog, state=ro)
        menu.add_command(label="Pause after\u2026", command=self.set_pause, state=ro)
        menu.add_command(label="Chapter title\u2026", command=lambda: self.set_chapter(line_id), state=ro)
        menu.add_command(label="Use the studio's settings", command=self.use_studio_settings, state=ro)
        menu.add_separator()
        menu.add_command(label="Add a line below\u2026", command=lambda: self.add_line(line_id), state=ro)
        menu.add_command(label="Delete line(s)", command=self.delete_lines, state=ro)
        menu._active = active  # type: ignore[attr-defined]  # keep the variable alive with the menu
        return menu

    # ---------------------------------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """The window closes: stop a running job, release the project."""
        self._stop_job()
        self.events.close()
        self._close()


def _has(project: Project, line_id: str) -> bool:
    try:
        project.index_of(line_id)
    except EngineError:
        return False
    return True
