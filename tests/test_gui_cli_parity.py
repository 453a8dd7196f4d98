"""The GUI and the command line send the same request to the same engine: same text, voice, settings, seed and
device give bit-identical WAV files (the real engine on the tiny model folder, the real window under Xvfb, the
real ``main.py synth`` in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from gui_helpers import close_studio, make_studio, wait_until
from tiny_models import single_thread, tiny_model_dir, write_clip  # noqa: F401 - fixture

from core.api import GenerationSettings
from core.engine import Engine

REPO = Path(__file__).resolve().parents[1]
TEXT = "Same words from both front ends. They must sound the same."
SETTINGS = GenerationSettings(num_beams=1, max_mel_tokens=8, diffusion_steps=2, seed=1234,
                              max_text_tokens_per_segment=40)
CLI_FLAGS = ("--num-beams", "1", "--max-mel-tokens", "8", "--diffusion-steps", "2", "--seed", "1234",
             "--max-text-tokens", "40", "--device", "auto")


def test_gui_and_cli_write_bit_identical_wavs(display, audio_server, tmp_path: Path) -> None:  # noqa: F811
    voice = write_clip(tmp_path / "voice.wav", 1.2, 175.0, seed=5)
    studio = make_studio(tmp_path / "home", engine=Engine(cache_dir=tmp_path / "gui-cache"), model_dir=tiny_model_dir())
    gui_wav = tmp_path / "gui.wav"
    try:
        app = studio.app
        wait_until(studio.root, lambda: app.engine.loaded and app.load_job is None, timeout=120)
        app.text_panel.set_text(TEXT)
        app.voice_panel.set_clip(str(voice))
        app.advanced.set_settings(SETTINGS.to_dict())
        app.results.stream.set(False)
        assert app.advanced.get_settings() == SETTINGS  # the panel holds exactly the settings the CLI gets
        job = app.generate()
        assert job is not None, studio.dialogs.messages("error")
        wait_until(studio.root, lambda: app.job is None, timeout=180)
        assert studio.dialogs.messages("error") == [] and app.results.current is not None
        assert app.results.save_wav(gui_wav) == gui_wav
    finally:
        close_studio(studio)

    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXTTS_")}
    env.update(OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    cli_wav = tmp_path / "cli.wav"
    run = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "synth", "--model-dir", str(tiny_model_dir()), "--cache-dir",
         str(tmp_path / "cli-cache"), "--text", TEXT, "--voice", str(voice), "--out", str(cli_wav), "--quiet",
         *CLI_FLAGS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    gui_audio, gui_rate = sf.read(str(gui_wav), dtype="int16")
    cli_audio, cli_rate = sf.read(str(cli_wav), dtype="int16")
    assert gui_rate == cli_rate == 22050 and gui_audio.size > 0 and np.abs(gui_audio.astype(np.int32)).max() > 0
    np.testing.assert_array_equal(gui_audio, cli_audio)
    assert gui_wav.read_bytes() == cli_wav.read_bytes()
