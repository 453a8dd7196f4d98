"""IndexTTS-2 GPT (UnifiedVoice v2): conditioning, emotion vectors and mel-code decoding."""

from core.gpt.generate import DecodeTrace, Generated, GenerationConfig
from core.gpt.model import UnifiedVoice

__all__ = ["DecodeTrace", "GenerationConfig", "Generated", "UnifiedVoice"]
