"""The emotion panel.

The GUI applies :func:`core.api.normalize_emo_vec` (the upstream WebUI's slider rule, kept once in core.api)
before calling the engine; the engine itself uses the vector it gets unchanged.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from core.api import EMO_BIAS, EMO_SUM_CAP, EMOTION_NAMES, Emotion, normalize_emo_vec
from desktop.dnd import AUDIO_SUFFIXES, enable_drop, only

MODES: tuple[tuple[str, str], ...] = (
    ("speaker", "Same as the voice"),
    ("audio", "From an emotion clip"),
    ("vector", "Emotion sliders"),
    ("text", "From a description"),
)


class EmotionPanel(ttk.LabelFrame):
    """Mode radio buttons; clip + strength; 8 sliders with the effective (capped) values; description; random."""

    def __init__(
        self, parent: tk.Misc, pick_clip: Callable[[], str | None], on_change: Callable[[], None] | None = None
    ) -> None:
        super().__init__(parent, text="Emotion", padding=8)
        self._pick_clip = pick_clip
        self._on_change = on_change or (lambda: None)
        self.mode = tk.StringVar(self, value="speaker")
        self.alpha = tk.DoubleVar(self, value=0.65)
        self.clip = tk.StringVar(self, value="")
        self.description = tk.StringVar(self, value="")
        self.random = tk.BooleanVar(self, value=False)
        self.sliders = [tk.DoubleVar(self, value=0.0) for _ in EMOTION_NAMES]
        self.effective_labels: list[ttk.Label] = []
        self.sum_text = tk.StringVar(self, value="")

        modes = ttk.Frame(self)
        modes.pack(fill="x")
        self.mode_buttons = {}
        for i, (key, label) in enumerate(MODES):
            b = ttk.Radiobutton(modes, text=label, value=key, variable=self.mode)
            b.grid(row=i // 2, column=i % 2, sticky="w", padx=(0, 12))
            self.mode_buttons[key] = b

        self.clip_frame = ttk.Frame(self)
        ttk.Label(self.clip_frame, text="Emotion clip:").pack(side="left")
        ttk.Entry(self.clip_frame, textvariable=self.clip, width=24).pack(side="left", fill="x", expand=True, padx=4)
        ttk.Button(self.clip_frame, text="Browse\u2026", command=self._browse).pack(side="left")

        self.vector_frame = ttk.Frame(self)
        for i, name in enumerate(EMOTION_NAMES):
            row, col = divmod(i, 2)
            ttk.Label(self.vector_frame, text=name.capitalize(), width=11).grid(row=row, column=col * 3, sticky="w")
            ttk.Scale(self.vector_frame, from_=0.0, to=1.0, variable=self.sliders[i], length=110).grid(
                row=row, column=col * 3 + 1, sticky="ew"
            )
            eff = ttk.Label(self.vector_frame, text="0.00", width=5)
            eff.grid(row=row, column=col * 3 + 2, sticky="w", padx=(2, 10))
            self.effective_labels.append(eff)
        self.vector_frame.columnconfigure(1, weight=1)
        self.vector_frame.columnconfigure(4, weight=1)
        ttk.Label(self.vector_frame, textvariable=self.sum_text, style="Muted.TLabel").grid(
            row=4, column=0, columnspan=6, sticky="w", pady=(4, 0)
        )
        ttk.Button(self.vector_frame, text="Reset sliders", command=self.reset_sliders).grid(
            row=5, column=0, columnspan=2, sticky="w"
        )

        self.text_frame = ttk.Frame(self)
        ttk.Label(self.text_frame, text="Description (empty = the text itself):").pack(anchor="w")
        ttk.Entry(self.text_frame, textvariable=self.description).pack(fill="x")

        self.alpha_frame = ttk.Frame(self)
        ttk.Label(self.alpha_frame, text="Strength").pack(side="left")
        ttk.Scale(self.alpha_frame, from_=0.0, to=1.0, variable=self.alpha).pack(
            side="left", fill="x", expand=True, padx=6
        )
        self.alpha_label = ttk.Label(self.alpha_frame, width=5)
        self.alpha_label.pack(side="left")
        self.random_check = ttk.Checkbutton(self, text="Random emotion sampling", variable=self.random)

        self.mode.trace_add("write", lambda *a: self._refresh())
        self.alpha.trace_add("write", lambda *a: self._refresh())
        for var in self.sliders:
            var.trace_add("write", lambda *a: self._refresh())
        for other in (self.clip, self.description, self.random):
            other.trace_add("write", lambda *a: self._on_change())
        self._refresh()
        enable_drop(self, self.drop_clip)

    def drop_clip(self, paths: list[Path]) -> bool:
        """An audio file dropped on the panel becomes the emotion clip (and the mode 'From an emotion clip')."""
        clips = only(paths, AUDIO_SUFFIXES)
        if not clips:
            return False
        self.clip.set(str(clips[0]))
        self.mode.set("audio")
        return True

    def _browse(self) -> None:
        path = self._pick_clip()
        if path:
            self.clip.set(path)

    def reset_sliders(self) -> None:
        for var in self.sliders:
            var.set(0.0)

    def raw_values(self) -> list[float]:
        return [round(float(v.get()), 4) for v in self.sliders]

    def effective_vector(self) -> list[float]:
        return normalize_emo_vec(self.raw_values(), apply_bias=True)

    def _refresh(self) -> None:
        mode = self.mode.get()
        for frame in (self.clip_frame, self.vector_frame, self.text_frame, self.alpha_frame):
            frame.pack_forget()
        self.random_check.pack_forget()
        shown = {
            "speaker": (),
            "audio": (self.clip_frame, self.alpha_frame),
            "vector": (self.vector_frame, self.alpha_frame),
            "text": (self.text_frame, self.alpha_frame),
        }[mode]
        for frame in shown:
            frame.pack(fill="x", pady=(6, 0))
        if mode != "speaker":
            self.random_check.pack(anchor="w", pady=(4, 0))
        self.alpha_label.configure(text=f"{self.alpha.get():.2f}")
        raw = self.raw_values()
        eff = normalize_emo_vec(raw)
        for label, value in zip(self.effective_labels, eff, strict=True):
            label.configure(text=f"{value:.2f}")
        biased = sum(v * b for v, b in zip(raw, EMO_BIAS, strict=True))
        capped = biased > EMO_SUM_CAP
        self.sum_text.set(
            f"Sum after bias {biased:.2f} / cap {EMO_SUM_CAP:.1f}"
            + (" \u2192 scaled down to 0.80" if capped else "")
        )
        self._on_change()

    # --- state <-> engine / presets --------------------------------------------------------------------
    def to_emotion(self) -> Emotion:
        """The :class:`Emotion` the engine gets (vector normalised here, as the WebUI does)."""
        mode = self.mode.get()
        alpha = round(float(self.alpha.get()), 4)
        random = bool(self.random.get())
        if mode == "audio":
            clip = self.clip.get().strip()
            return Emotion(mode="audio", audio=Path(clip) if clip else None, alpha=alpha, random=random)
        if mode == "vector":
            return Emotion(mode="vector", vector=tuple(self.effective_vector()), alpha=alpha, random=random)
        if mode == "text":
            return Emotion(mode="text", text=self.description.get().strip(), alpha=alpha, random=random)
        return Emotion(mode="speaker")

    def get_state(self) -> dict:
        return {
            "mode": self.mode.get(),
            "alpha": round(float(self.alpha.get()), 4),
            "clip": self.clip.get(),
            "sliders": self.raw_values(),
            "description": self.description.get(),
            "random": bool(self.random.get()),
        }

    def set_state(self, state: dict) -> None:
        mode = state.get("mode", "speaker")
        if mode not in dict(MODES):
            raise ValueError(f"unknown emotion mode {mode!r}")
        sliders = [float(v) for v in state.get("sliders", [0.0] * len(EMOTION_NAMES))]
        sliders = (sliders + [0.0] * len(EMOTION_NAMES))[: len(EMOTION_NAMES)]
        alpha = float(state.get("alpha", 0.65))
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"emotion strength {alpha} is outside 0..1")
        self.alpha.set(alpha)
        self.clip.set(str(state.get("clip", "") or ""))
        self.description.set(str(state.get("description", "")))
        self.random.set(bool(state.get("random", False)))
        for var, value in zip(self.sliders, sliders, strict=True):
            var.set(min(1.0, max(0.0, value)))
        self.mode.set(mode)
