"""What the window keeps of each generated result: the exact request (to regenerate it) and the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.api import Emotion, GenerationSettings, SynthesisRequest, SynthesisResult


@dataclass(frozen=True)
class Request:
    """Everything needed to regenerate a result exactly: the engine's request plus what only the GUI needs."""

    synthesis: SynthesisRequest
    voice_label: str = ""
    emotion_state: dict = field(default_factory=dict)
    stream: bool = False

    @property
    def text(self) -> str:
        return self.synthesis.text

    @property
    def voice(self) -> str:
        return str(self.synthesis.voice)

    @property
    def emotion(self) -> Emotion:
        return self.synthesis.emotion

    @property
    def settings(self) -> GenerationSettings:
        return self.synthesis.settings


@dataclass
class HistoryEntry:
    request: Request
    result: SynthesisResult
    created: float = field(default_factory=time.time)
