"""Shared sounddevice helpers: import, device lists, and one clear error when there is no audio device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

from desktop.errors import UserError

log = logging.getLogger(__name__)


class AudioUnavailable(UserError):
    """No usable microphone/speaker, or PortAudio is missing; the message says what to do."""


def sounddevice() -> ModuleType:
    """Import sounddevice lazily, so a missing PortAudio library is a message, not a crash at start."""
    try:
        import sounddevice as sd
    except OSError as exc:  # 'PortAudio library not found'
        raise AudioUnavailable(
            "Audio is not available: the PortAudio library was not found. On Linux install 'libportaudio2'."
        ) from exc
    return sd


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    hostapi: str
    samplerate: float
    inputs: int
    outputs: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.hostapi})"


def list_devices() -> list[Device]:
    sd = sounddevice()
    try:
        raw = sd.query_devices()
        apis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioUnavailable(f"Could not list the audio devices: {exc}.") from exc
    return [
        Device(
            index=d["index"],
            name=d["name"],
            hostapi=apis[d["hostapi"]]["name"],
            samplerate=float(d["default_samplerate"]),
            inputs=int(d["max_input_channels"]),
            outputs=int(d["max_output_channels"]),
        )
        for d in raw
    ]


def pick_device(kind: str, name: str = "") -> Device:
    """The device for ``kind`` ('input' or 'output'): the named one if it exists, else the system default."""
    sd = sounddevice()
    word = "microphone" if kind == "input" else "speaker or headphones"
    try:
        devices = list_devices()
        if name:
            for d in devices:
                if d.name == name and (d.inputs if kind == "input" else d.outputs) > 0:
                    return d
            log.warning("audio device %r not found; using the default %s", name, kind)
        info = sd.query_devices(kind=kind)
    except (sd.PortAudioError, AudioUnavailable, ValueError) as exc:
        raise AudioUnavailable(
            f"No {word} found. Connect one (or enable it in the system sound settings), then try again. ({exc})"
        ) from exc
    if (info["max_input_channels"] if kind == "input" else info["max_output_channels"]) < 1:
        raise AudioUnavailable(f"No {word} found: the default device '{info['name']}' has no {kind} channels.")
    apis = sd.query_hostapis()
    return Device(
        index=info["index"],
        name=info["name"],
        hostapi=apis[info["hostapi"]]["name"],
        samplerate=float(info["default_samplerate"]),
        inputs=int(info["max_input_channels"]),
        outputs=int(info["max_output_channels"]),
    )
