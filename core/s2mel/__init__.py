"""s2mel: GPT codes/latents -> mel spectrogram (length regulator + DiT flow matching)."""

from core.s2mel.length_regulator import mel_frames_for_codes
from core.s2mel.model import S2Mel

__all__ = ["S2Mel", "mel_frames_for_codes"]
