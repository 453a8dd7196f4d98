"""Presets, history-to-preset, regenerate and the last-used state of the main window.

:class:`PresetActions` is mixed into :class:`desktop.app.StudioApp`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from core.api import GenerationSettings
from desktop.dialogs import PRESET_FILETYPES, UserError
from desktop.presets import Preset, PresetError
from desktop.worker import Job

log = logging.getLogger(__name__)


class PresetActions:
    """Preset files and the saved state (mixed into StudioApp)."""

    # --- presets and state ------------------------------------------------------------------------------------
    def snapshot(self) -> Preset:
        return Preset(
            name="",
            voice=self.voice_panel.voice_path.get(),
            emotion=self.emotion_panel.get_state(),
            settings=self._settings_dict(),
        )

    def _settings_dict(self) -> dict:
        try:
            return self.advanced.get_settings().to_dict()
        except UserError:
            return GenerationSettings().to_dict()

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

    def refresh_presets(self) -> None:
        self.preset_box.configure(values=self.presets.names())

    def save_preset_dialog(self, base: Preset | None = None) -> Path | None:
        name = self.dialog(
            "string", parent=self.root, title="Save preset", prompt="Preset name:", initialvalue=self.preset_name.get()
        )
        if not name or not name.strip():
            return None
        preset = base or self.snapshot()
        preset.name = name.strip()
        try:
            path = self.presets.save(preset)
        except OSError as exc:
            self.error("Save preset", exc)
            return None
        self.refresh_presets()
        self.preset_name.set(preset.name)
        self.status.set(f"Preset '{preset.name}' saved.")
        return path

    def load_preset(self, name: str) -> bool:
        if not name:
            self.error("Preset", "Choose a preset first.")
            return False
        try:
            preset = self.presets.load(name)
        except PresetError as exc:
            self.error("Preset", exc, prefix=f"Could not load the preset '{name}': ")
            return False
        self.apply_preset(preset)
        self.status.set(f"Preset '{preset.name}' loaded.")
        return True

    def import_preset(self) -> bool:
        path = self.dialog("open_file", parent=self.root, title="Import a preset", filetypes=PRESET_FILETYPES)
        if not path:
            return False
        try:
            preset = self.presets.load_file(Path(path))
            self.presets.save(preset)
        except (PresetError, OSError) as exc:
            self.error("Import preset", exc, prefix=f"Could not import {Path(path).name}: ")
            return False
        self.refresh_presets()
        self.preset_name.set(preset.name)
        self.apply_preset(preset)
        return True

    def delete_preset(self) -> None:
        name = self.preset_name.get()
        if name and self.dialog(
            "yesno", parent=self.root, title="Delete preset", message=f"Delete the preset '{name}'?"
        ):
            self.presets.delete(name)
            self.preset_name.set("")
            self.refresh_presets()

    def regenerate(self, index: int) -> Job | None:
        request = self.history[index].request
        self.text_panel.set_text(request.text)
        if Path(request.voice).is_file():
            self.voice_panel.set_clip(request.voice, label=request.voice_label)
        self.emotion_panel.set_state(request.emotion_state)
        self.advanced.set_settings(request.settings.to_dict())
        if self.job is not None or not self.engine.loaded:
            return None
        return self.start_job(request)  # frozen: the same request, the same seed

    def history_to_preset(self, index: int) -> Path | None:
        request = self.history[index].request
        return self.save_preset_dialog(
            Preset(
                name="", voice=request.voice, emotion=dict(request.emotion_state), settings=request.settings.to_dict()
            )
        )

    def save_state(self) -> None:
        if not self.persist:
            return
        state = {
            "text": self.text_panel.get_text(),
            **asdict(self.snapshot()),
            "advanced_open": bool(self.advanced.open.get()),
            "preset": self.preset_name.get(),
            "streaming": bool(self.stream_var.get()),
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
            self.preset_name.set(str(state.get("preset", "")))
            self.stream_var.set(bool(state.get("streaming", self.settings.streaming)))
        except (ValueError, TypeError) as exc:
            log.warning("last-used state partly ignored: %s", exc)
            self.files.notes.append(f"The last-used state could not be fully restored ({exc}).")

    def _save_settings(self) -> None:
        if self.persist:
            try:
                self.files.save_settings(self.settings)
            except OSError as exc:
                self.error("Settings", exc, prefix="Could not save the settings: ")
