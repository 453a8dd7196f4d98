"""The studio with IndexTTS-2.0 and 2.5 side by side (real Tk under Xvfb, the stand-in engine): the model picker
loads the picked version's folder, the language picker and duration slider exist for 2.5 only, the request carries
them (and 2.5's per-language tokens), the preview says when a ``!`` has no effect, and A/B renders two takes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gui_helpers import Studio, close_studio, make_studio, wait_until

from core.models import V25_SUBDIR
from desktop.standin import StandInEngine


def _folders(root: Path) -> Path:
    """A model folder with IndexTTS-2.0 and, in its subfolder, IndexTTS-2.5 (the files the version is told by)."""
    (root / V25_SUBDIR).mkdir(parents=True)
    (root / "config.yaml").write_text("gpt: {}\n")
    (root / V25_SUBDIR / "config.yaml").write_text("gpt: {}\n")
    (root / V25_SUBDIR / "codec.pth").write_bytes(b"PK")
    return root


@pytest.fixture
def both(display, audio_server, tmp_path) -> Iterator[Studio]:
    s = make_studio(tmp_path / "home", engine=StandInEngine(step_seconds=0.01), model_dir=_folders(tmp_path / "m"))
    s.app.voice_panel.set_clip(s.voice)
    yield s
    close_studio(s)


def _pick(s: Studio, version: str) -> None:
    s.app.choose_model_version(version)
    wait_until(s.root, lambda: s.app.load_job is None and s.app.engine.limits.version == version)
    s.root.update()


def test_pickers_and_slider_follow_the_model(both: Studio) -> None:
    app, engine, folder = both.app, both.app.engine, both.app.model_dir
    bar = app.model_bar
    assert engine.loads[-1] == str(folder) and engine.limits.version == "2.0"
    assert list(bar.picker.cget("values")) == ["2.0", "2.5"] and bar.version.get() == "2.0"
    assert not bar.duration_visible and not bar.lang_picker.winfo_ismapped()
    assert "disabled" not in bar.ab_button.state()

    _pick(both, "2.5")
    assert engine.loads[-1] == str(folder / V25_SUBDIR) and bar.version.get() == "2.5"
    assert bar.duration_visible and bar.lang_picker.winfo_ismapped() and bar.slider.winfo_ismapped()
    assert app.settings.model_version == "2.5"
    # the language from the script, its tokens per segment (ja 100), no duration change
    app.text_panel.set_text("今日はとても良い天気ですね。")
    both.generate_and_wait()
    s = engine.calls[-1]["settings"]
    assert (s["lang"], s["duration_factor"], s["max_text_tokens_per_segment"]) == (None, 1.0, 100)
    # a chosen language and duration
    bar.set_language("es")
    bar.duration.set(1.5)
    bar._duration_moved()
    assert bar.duration_text.get() == "1.50\u00d7"
    app.text_panel.set_text("Hola a todos.")
    both.generate_and_wait()
    s = engine.calls[-1]["settings"]
    assert (s["lang"], s["duration_factor"], s["max_text_tokens_per_segment"]) == ("es", 1.5, 60)

    _pick(both, "2.0")
    assert engine.loads[-1] == str(folder) and not bar.duration_visible
    both.generate_and_wait()
    s = engine.calls[-1]["settings"]
    assert (s["lang"], s["duration_factor"], s["max_text_tokens_per_segment"]) == (None, 1.0, 120)


def test_preview_says_a_mark_has_no_effect_in_2_5(both: Studio) -> None:
    app = both.app
    app.text_panel.set_text('Wow! That is "great".')
    app.text_panel.update_preview()
    both.root.update()
    rows = app.text_panel.preview.get(0, "end")
    assert not any("no effect" in r for r in rows)  # 2.0 reads them
    _pick(both, "2.5")
    app.text_panel.update_preview()
    both.root.update()
    rows = app.text_panel.preview.get(0, "end")
    note = ("  note: 3 \u2018!\u2019 or \u2018\"\u2019 here have no effect in IndexTTS-2.5 (the model never sees "
            "a lone ! or \")")
    assert rows[-1] == note


def test_ab_renders_two_takes(both: Studio) -> None:
    app, engine, folder = both.app, both.app.engine, both.app.model_dir
    _pick(both, "2.5")
    app.model_bar.set_language("en")
    app.model_bar.duration.set(0.75)
    app.model_bar._duration_moved()
    app.text_panel.set_text("Hello there. Which one do you like?")
    before, calls = len(app.results.history), len(engine.calls)
    job = app.generate_ab()
    assert job is not None
    wait_until(both.root, lambda: app.job is None, 20)
    assert not both.dialogs.messages()
    takes = app.results.history[before:]
    assert [t.request.voice_label.rsplit(" \u00b7 ", 1)[-1] for t in takes] == ["IndexTTS-2.0", "IndexTTS-2.5"]
    first, second = engine.calls[calls:]
    assert first["text"] == second["text"] and first["voice"] == second["voice"]
    assert first["settings"]["seed"] == second["settings"]["seed"]
    assert (first["settings"]["lang"], first["settings"]["duration_factor"]) == (None, 1.0)
    assert (second["settings"]["lang"], second["settings"]["duration_factor"]) == ("en", 0.75)
    assert all(t.result.audio.size > 0 for t in takes)
    # 2.0, 2.5, and the picker's model stays loaded (2.5: no reload needed)
    assert engine.loads[-2:] == [str(folder), str(folder / V25_SUBDIR)] and engine.limits.version == "2.5"
    assert app.model_bar.version.get() == "2.5"
    app.results.show(before)  # either take can be played or saved
    assert app.results.current is takes[0]
