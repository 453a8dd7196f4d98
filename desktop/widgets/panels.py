"""The panels of the main window: text, voice, advanced settings, history, first-run screen."""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from tkinter import ttk

from core.api import EngineError, GenerationSettings, SettingError
from desktop.dialogs import AUDIO_FILETYPES, DialogFn, UserError, gui_words
from desktop.dnd import AUDIO_SUFFIXES, TEXT_SUFFIXES, enable_drop, only
from desktop.voice_library import Voice, VoiceError, VoiceLibrary, check_clip

log = logging.getLogger(__name__)



# --- text ---------------------------------------------------------------------------------------------------
def read_text_file(path: Path) -> str:
    """The words of a text, Markdown, script or subtitle file (the project importers' reading, cues' text only)."""
    from core.project.importers import detect_format, parse, read_source

    found = parse(read_source(path), detect_format(path), path.name)
    return "\n\n".join(line.text for line in found.lines)


class TextPanel(ttk.LabelFrame):
    """The text to speak (typed, or a text/Markdown/subtitle file dropped on it), its character count and a live
    preview of the segments as the engine will speak them (after the pronunciation dictionary)."""

    def __init__(
        self, parent: tk.Misc, split: Callable[[str], list[str]], report: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(parent, text="Text", padding=8)
        self._split = split
        self._report = report or (lambda message: log.warning("%s", message))
        self._after_id: str | None = None
        self.char_count = tk.StringVar(self, value="0 characters")
        self.segments: list[str] = []
        self.text = tk.Text(self, height=6, width=40, wrap="word", undo=True, font=("TkDefaultFont", 11), borderwidth=0)
        info = ttk.Frame(self)
        ttk.Label(info, textvariable=self.char_count).pack(side="left")
        self.segment_count = tk.StringVar(self, value="")
        ttk.Label(info, textvariable=self.segment_count).pack(side="right")
        self.preview = tk.Listbox(self, height=3, activestyle="none", borderwidth=0)
        # Packed bottom up, the text box last: on a small screen it is the one that gets shorter.
        self.preview.pack(fill="x", pady=(4, 0), side="bottom")
        info.pack(fill="x", pady=(4, 0), side="bottom")
        self.text.pack(fill="both", expand=True)
        self.text.bind("<<Modified>>", self._modified)
        self.dnd = enable_drop(self.text, self.open_files)

    def open_files(self, paths: list[Path]) -> bool:
        """Put the text of the first text, Markdown or subtitle file among ``paths`` into the box."""
        texts = only(paths, TEXT_SUFFIXES)
        if not texts:
            self._report("Drop a text file here (.txt, .md, .srt or .vtt); audio files go onto the Voice panel.")
            return False
        try:
            self.set_text(read_text_file(texts[0]))
        except EngineError as exc:
            self._report(str(exc))
            return False
        return True

    def _modified(self, event: tk.Event | None = None) -> None:
        self.text.edit_modified(False)
        self.char_count.set(f"{len(self.get_text())} characters")
        if self._after_id is not None:
            self.after_cancel(self._after_id)
        self._after_id = self.after(150, self.update_preview)

    def update_preview(self) -> None:
        self._after_id = None
        text = self.get_text()
        try:
            self.segments = self._split(text) if text.strip() else []
        except Exception as exc:  # the engine may need its tokenizer loaded first
            log.debug("segment preview unavailable: %s", exc)
            self.segments = []
            self.segment_count.set("segment preview after the model is loaded")
            return
        self.preview.delete(0, "end")
        for i, seg in enumerate(self.segments, 1):
            self.preview.insert("end", f"{i:>3}. {seg}")
        n = len(self.segments)
        self.segment_count.set(f"{n} segment{'s' if n != 1 else ''}" if n else "")

    def get_text(self) -> str:
        return self.text.get("1.0", "end-1c")

    def set_text(self, text: str) -> None:
        self.text.delete("1.0", "end")
        self.text.insert("1.0", text)
        self._modified()


# --- voice --------------------------------------------------------------------------------------------------
class VoicePanel(ttk.LabelFrame):
    """Reference clip (file, drag and drop, library, recording) and the library list."""

    def __init__(
        self,
        parent: tk.Misc,
        library: VoiceLibrary,
        dialog: DialogFn,
        on_play: Callable[[Path], None],
        on_record: Callable[[], object],
        on_added: Callable[[Voice], object] | None = None,
    ) -> None:
        super().__init__(parent, text="Voice", padding=8)
        self.on_added = on_added or (lambda voice: None)
        self.library = library
        self.dialog = dialog
        self.on_play = on_play
        self.voice_path = tk.StringVar(self, value="")
        self.voice_label = tk.StringVar(self, value="No voice chosen")
        ttk.Label(self, textvariable=self.voice_label, font=("TkDefaultFont", 10, "bold")).pack(fill="x")
        row = ttk.Frame(self)
        row.pack(fill="x", pady=(4, 0))
        ttk.Button(row, text="Open clip\u2026", command=self.open_clip).pack(side="left")
        ttk.Button(row, text="\u25b6 Play", command=self.play_current).pack(side="left", padx=4)
        ttk.Button(row, text="\u25cf Record\u2026", command=on_record).pack(side="left")
        self.tree = ttk.Treeview(self, columns=("name",), show="headings", height=4, selectmode="browse")
        self.tree.heading("name", text="Voice library")
        self.tree.pack(fill="x", pady=(6, 0))
        self.tree.bind("<<TreeviewSelect>>", lambda e: self._use_selected())
        lib = ttk.Frame(self)
        lib.pack(fill="x", pady=(4, 0))
        ttk.Button(lib, text="Add current to library", command=self.add_current).pack(side="left")
        ttk.Button(lib, text="Rename", command=self.rename_selected).pack(side="left", padx=4)
        ttk.Button(lib, text="Delete", command=self.delete_selected).pack(side="left")
        self.dnd = enable_drop(self, self.drop_clip)
        enable_drop(self.tree, self.drop_on_library)
        self.refresh()

    def _audio(self, paths: list[Path]) -> list[Path]:
        clips = only(paths, AUDIO_SUFFIXES)
        if not clips:
            self._error("Drop an audio file here (WAV, FLAC, MP3 or OGG); text files go onto the Text box.")
        return clips

    def drop_clip(self, paths: list[Path]) -> bool:
        """A file dropped on the panel becomes the voice."""
        clips = self._audio(paths)
        return bool(clips) and self.set_clip(clips[0])

    def drop_on_library(self, paths: list[Path]) -> list[Voice]:
        """Files dropped on the library list are added to it (named after the file); the first becomes the voice."""
        added = []
        for clip in self._audio(paths):
            try:
                added.append(self.library.add_file(clip.stem, clip))
            except (VoiceError, OSError) as exc:
                self._error(f"Could not add {clip.name} to the library: {exc}")
        self.refresh()
        if added:
            self.use_voice(added[0])
        for voice in added:
            self.on_added(voice)
        return added

    def refresh(self) -> None:
        self.tree.delete(*self.tree.get_children())
        for voice in self.library.list():
            self.tree.insert("", "end", iid=voice.id, values=(voice.name,))

    def _error(self, message: str, details: str = "") -> None:
        self.dialog("error", parent=self, title="Voice", message=message, details=details)

    def open_clip(self) -> None:
        path = self.dialog("open_file", parent=self, title="Choose a voice clip", filetypes=AUDIO_FILETYPES)
        if path:
            self.set_clip(path)

    def set_clip(self, path: str | Path, label: str | None = None) -> bool:
        """Use ``path`` as the voice if it is a readable clip; otherwise say why and keep the old voice."""
        try:
            info = check_clip(path)
        except VoiceError as exc:
            self._error(str(exc))
            return False
        self.voice_path.set(str(path))
        self.voice_label.set(label or f"{Path(path).name} ({info.frames / info.samplerate:.1f} s)")
        return True

    def use_voice(self, voice: Voice) -> None:
        if self.set_clip(voice.clip, label=f"{voice.name} (library)"):
            if self.tree.exists(voice.id) and self.tree.selection() != (voice.id,):
                self.tree.selection_set(voice.id)

    def selected(self) -> Voice | None:
        sel = self.tree.selection()
        if not sel:
            return None
        try:
            return self.library.get(sel[0])
        except VoiceError:
            return None

    def _use_selected(self) -> None:
        voice = self.selected()
        if voice is not None and self.voice_path.get() != str(voice.clip):
            self.use_voice(voice)

    def play_current(self) -> None:
        if not self.voice_path.get():
            self._error("Choose a voice first.")
            return
        self.on_play(Path(self.voice_path.get()))

    def add_current(self) -> Voice | None:
        path = self.voice_path.get()
        if not path:
            self._error("Choose a voice clip first, then add it to the library.")
            return None
        name = self.dialog(
            "string", parent=self, title="Add voice", prompt="Name for this voice:", initialvalue=Path(path).stem
        )
        if not name:
            return None
        try:
            voice = self.library.add_file(name, path)
        except (VoiceError, OSError) as exc:
            self._error(f"Could not add the voice: {exc}")
            return None
        self.refresh()
        self.use_voice(voice)
        self.on_added(voice)
        return voice

    def rename_selected(self) -> None:
        voice = self.selected()
        if voice is None:
            self._error("Select a voice in the library first.")
            return
        name = self.dialog("string", parent=self, title="Rename voice", prompt="New name:", initialvalue=voice.name)
        if name and name.strip():
            self.library.rename(voice.id, name)
            self.refresh()
            self.use_voice(self.library.get(voice.id))

    def delete_selected(self) -> None:
        voice = self.selected()
        if voice is None:
            self._error("Select a voice in the library first.")
            return
        if not self.dialog(
            "yesno", parent=self, title="Delete voice", message=f"Delete the voice '{voice.name}' and its clip?"
        ):
            return
        if self.voice_path.get() == str(voice.clip):
            self.voice_path.set("")
            self.voice_label.set("No voice chosen")
        self.library.delete(voice.id)
        self.refresh()


# --- advanced settings ----------------------------------------------------------------------------------------
ADVANCED: tuple[tuple[str, str, type], ...] = (
    ("temperature", "Temperature", float),
    ("top_p", "Top-p", float),
    ("top_k", "Top-k (0 = off)", int),
    ("num_beams", "Beams", int),
    ("repetition_penalty", "Repetition penalty", float),
    ("max_mel_tokens", "Max speech tokens", int),
    ("max_text_tokens_per_segment", "Tokens per segment", int),
    ("interval_silence_ms", "Silence between segments (ms)", int),
    ("diffusion_steps", "Diffusion steps", int),
    ("seed", "Seed (empty = random)", int),
)


ADVANCED_LABELS: dict[str, str] = {key: label for key, label, _ in ADVANCED}


def setting_error_words(exc: SettingError) -> str:
    """A :class:`SettingError` in the GUI's words: the field's label in the Advanced panel and what it allows."""
    label = ADVANCED_LABELS.get(exc.setting)
    name = label if label else f"The setting '{exc.setting}'"
    return f"Advanced settings: {name} must be {exc.allowed}."


def _parse(raw: str, kind: type) -> float | int:
    value = float(raw)  # ValueError for text
    if kind is int:
        if not value.is_integer():
            raise ValueError(raw)
        return int(value)
    return value


class AdvancedPanel(ttk.Frame):
    """Collapsed by default; every GenerationSettings field the user may want, plus reset to defaults."""

    def __init__(self, parent: tk.Misc, on_change: Callable[[], object] | None = None) -> None:
        super().__init__(parent)
        self.open = tk.BooleanVar(self, value=False)
        self.toggle = ttk.Checkbutton(
            self, text="\u25b8 Advanced settings", variable=self.open, style="Toolbutton", command=self._show
        )
        self.toggle.pack(anchor="w")
        self.body = ttk.Frame(self, padding=(8, 4))
        self.vars: dict[str, tk.StringVar] = {}
        self.entries: dict[str, ttk.Entry] = {}
        self.do_sample = tk.BooleanVar(self, value=True)
        self.fast = tk.BooleanVar(self, value=False)
        for row, (key, label, _) in enumerate(ADVANCED):
            ttk.Label(self.body, text=label).grid(row=row, column=0, sticky="w")
            var = tk.StringVar(self)
            self.entries[key] = ttk.Entry(self.body, textvariable=var, width=10)
            self.entries[key].grid(row=row, column=1, sticky="w", padx=6, pady=1)
            self.vars[key] = var
            if on_change:
                var.trace_add("write", lambda *a: on_change())
        ttk.Checkbutton(self.body, text="Sampling (off = greedy)", variable=self.do_sample).grid(
            row=len(ADVANCED), column=0, columnspan=2, sticky="w"
        )
        ttk.Checkbutton(self.body, text="Fast mode (slightly different sound)", variable=self.fast).grid(
            row=len(ADVANCED) + 1, column=0, columnspan=2, sticky="w"
        )
        ttk.Button(self.body, text="Reset to defaults", command=self.reset).grid(
            row=len(ADVANCED) + 2, column=0, sticky="w", pady=(4, 0)
        )
        # shown while 'Stream inside segments' is on (the result panel's switch): that decode uses one beam
        self.beams_note = ttk.Label(self.body, text="1 while streaming inside segments", style="Muted.TLabel")
        self._extra: dict = {}
        self.reset()

    def note_one_beam(self, on: bool) -> None:
        """Streaming inside segments decodes with one beam: the Beams field is greyed out, with a note why."""
        self.entries["num_beams"].state(["disabled"] if on else ["!disabled"])
        if on:
            row = int(self.entries["num_beams"].grid_info()["row"])
            self.beams_note.grid(row=row, column=2, sticky="w")
        else:
            self.beams_note.grid_remove()

    def _show(self) -> None:
        if self.open.get():
            self.body.pack(fill="x")
        else:
            self.body.pack_forget()
        self.toggle.configure(text=("\u25be" if self.open.get() else "\u25b8") + " Advanced settings")

    def set_open(self, value: bool) -> None:
        self.open.set(value)
        self._show()

    def reset(self) -> None:
        self.set_settings(GenerationSettings().to_dict())

    def set_settings(self, data: dict) -> None:
        settings = GenerationSettings.from_dict(data)
        own = ("do_sample", "fast", "stream")  # stream: the result panel's switch decides it for every request
        self._extra = {k: v for k, v in settings.to_dict().items() if k not in self.vars and k not in own}
        for key, var in self.vars.items():
            value = getattr(settings, key)
            var.set("" if value is None else str(value))
        self.do_sample.set(settings.do_sample)
        self.fast.set(settings.fast)

    def get_settings(self) -> GenerationSettings:
        """The settings typed in, or :class:`UserError` naming the field that is not a number / out of range."""
        values: dict = dict(self._extra)
        values["do_sample"] = bool(self.do_sample.get())
        values["fast"] = bool(self.fast.get())
        for key, label, kind in ADVANCED:
            raw = self.vars[key].get().strip()
            if key == "seed" and raw == "":
                values[key] = None
                continue
            try:
                values[key] = _parse(raw, kind)
            except ValueError:
                raise UserError(
                    f"Advanced settings: '{label}' must be {'a whole number' if kind is int else 'a number'} "
                    f"(got '{raw}')."
                ) from None
        settings = GenerationSettings(
            **{f.name: values[f.name] for f in fields(GenerationSettings) if f.name in values}
        )
        try:
            settings.validate()
        except SettingError as exc:
            raise UserError(setting_error_words(exc)) from None
        return settings


# --- history --------------------------------------------------------------------------------------------------
class HistoryPanel(ttk.LabelFrame):
    def __init__(
        self,
        parent: tk.Misc,
        on_select: Callable[[int], object],
        on_regenerate: Callable[[int], object],
        on_preset: Callable[[int], object],
    ) -> None:
        super().__init__(parent, text="History", padding=6)
        self.tree = ttk.Treeview(
            self, columns=("time", "text", "voice", "length", "seed"), show="headings", height=3, selectmode="browse"
        )
        for col, label, width in (
            ("time", "Time", 64),
            ("text", "Text", 200),
            ("voice", "Voice", 100),
            ("length", "Length", 56),
            ("seed", "Seed", 80),
        ):
            self.tree.heading(col, text=label)
            self.tree.column(col, width=width, stretch=col == "text")
        self.tree.bind("<<TreeviewSelect>>", lambda e: self._with_selected(on_select))
        buttons = ttk.Frame(self)
        buttons.pack(fill="x", pady=(4, 0), side="bottom")
        self.tree.pack(fill="both", expand=True)  # after the buttons: the list shrinks, the buttons stay
        ttk.Button(buttons, text="Regenerate", command=lambda: self._with_selected(on_regenerate)).pack(side="left")
        ttk.Button(buttons, text="Save as preset\u2026", command=lambda: self._with_selected(on_preset)).pack(
            side="left", padx=4
        )

    def _with_selected(self, callback: Callable[[int], object]) -> None:
        index = self.selected()
        if index is not None:
            callback(index)

    def add(self, index: int, time_text: str, text: str, voice: str, seconds: float, seed: int | None) -> None:
        short = text.replace("\n", " ")
        self.tree.insert(
            "",
            0,
            iid=str(index),
            values=(
                time_text,
                short[:80] + ("\u2026" if len(short) > 80 else ""),
                voice,
                f"{seconds:.1f} s",
                "" if seed is None else seed,
            ),
        )
        self.tree.selection_set(str(index))

    def selected(self) -> int | None:
        sel = self.tree.selection()
        return int(sel[0]) if sel else None


# --- first run ------------------------------------------------------------------------------------------------
class FirstRunScreen(ttk.Frame):
    """Shown instead of the studio when the models cannot be loaded: what is missing and what to do."""

    def __init__(
        self, parent: tk.Misc, on_setup: Callable[[], None], on_choose: Callable[[], None], on_retry: Callable[[], None]
    ) -> None:
        super().__init__(parent, padding=40)
        ttk.Label(self, text="The voice models are not set up yet", font=("TkDefaultFont", 16, "bold")).pack(anchor="w")
        self.message = tk.StringVar(self, value="")
        ttk.Label(self, textvariable=self.message, wraplength=640, justify="left").pack(anchor="w", pady=(12, 18))
        buttons = ttk.Frame(self)
        buttons.pack(anchor="w")
        self.setup_button = ttk.Button(buttons, text="Set up models\u2026", command=on_setup)
        self.setup_button.pack(side="left")
        ttk.Button(buttons, text="Choose model folder\u2026", command=on_choose).pack(side="left", padx=8)
        ttk.Button(buttons, text="Retry", command=on_retry).pack(side="left")

    def show_problem(self, model_dir: Path | None, problem: str) -> None:
        where = f"Model folder: {model_dir}" if model_dir else "No model folder is configured."
        self.message.set(
            "IndexTTS2 Desktop needs the IndexTTS-2 model files "
            "(about 6 GB: gpt.pth, s2mel.pth, bpe.model, config.yaml "
            "and the helper models) on this computer.\n\n"
            f"{where}\nProblem: {gui_words(problem)}\n\n"
            "Press 'Set up models' to download them, or 'Choose model folder' if you already have them."
        )
