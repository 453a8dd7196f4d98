"""Every bad input of the projects issue gets one clear message and loses nothing: unknown speakers, empty lines,
malformed and overlapping subtitles, missing and corrupt clips, an unwritable folder, a full disk while a take is
written, a project.json from a newer version or hand-edited into invalid JSON, and two instances at once."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from project_helpers import FAST, REPO, SCRIPT, cli, engine_fixture, env, read_json, render_args, work_fixture  # noqa: F401 - the work and engine fixtures
from tiny_models import single_thread, write_clip  # noqa: F401 - fixture

from core.api import EngineError, GenerationSettings
from core.engine import Engine
from core.project import Project
from core.project.importers import ImportProblem, import_project
from core.project.render import TakeWriteError, render
from core.project.store import BACKUP_FILE, PROJECT_FILE

SETTINGS = GenerationSettings(do_sample=False, num_beams=1, max_mel_tokens=8, diffusion_steps=2)


def one_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def make(work: Path, folder: Path, text: str = SCRIPT, **voices: str) -> Project:
    src = folder.with_suffix(".txt")
    src.write_text(text, encoding="utf-8")
    voices = voices or {"Alice": str(work / "alice.wav"), "Bob": str(work / "bob.wav")}
    return import_project(src, folder, "script", voices=voices, settings=SETTINGS)


# ------------------------------------------------------------------------------------ import


def test_unknown_speakers_reported_in_one_message(work: Path, tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("Alice: Hi.\nCarol: Hello.\nDave: Hey.\nCarol: Again.\n", encoding="utf-8")
    run = cli(work, "import", str(tmp_path / "s.txt"), "--format", "script", "--project", str(tmp_path / "p"),
              "--voice", "Alice=alice.wav")
    error = one_error(run)
    assert "no voice for the speaker(s) 'Carol', 'Dave'" in error and "--voice Carol=clip.wav" in error
    assert not (tmp_path / "p").exists()
    # with a default voice the import succeeds and says which names use it
    ok = cli(work, "import", str(tmp_path / "s.txt"), "--format", "script", "--project", str(tmp_path / "p"),
             "--voice", "Alice=alice.wav", "--default-voice", "bob.wav")
    assert ok.returncode == 0, ok.stderr
    assert "note: speaker 'Carol' uses the default voice" in ok.stderr
    assert read_json(tmp_path / "p")["voices"]["Dave"] == str((work / "bob.wav").resolve())


def test_empty_lines(work: Path, tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("Alice: Hi.\nBob:   \n[Alice]\t\nBob: Fine.\n", encoding="utf-8")
    run = cli(work, "import", str(tmp_path / "s.txt"), "--format", "script", "--project", str(tmp_path / "p"),
              "--voice", "Alice=alice.wav", "--voice", "Bob=bob.wav")
    assert one_error(run) == f"error: {tmp_path / 's.txt'}: line 2 (Bob) is empty; line 3 (Alice) is empty."
    assert not (tmp_path / "p").exists()
    (tmp_path / "blank.txt").write_text(" \n\n\t\n", encoding="utf-8")
    run = cli(work, "import", str(tmp_path / "blank.txt"), "--project", str(tmp_path / "p"), "--default-voice",
              "alice.wav")
    assert "has nothing to say" in one_error(run)
    with make(work, tmp_path / "q") as project:
        line = project.lines[0]
        with pytest.raises(EngineError, match=f"Line {line.id} is empty"):
            project.set_text(line.id, "  \n ")
        assert line.text == "Hello there, Bob."
        assert read_json(project.folder)["lines"][0]["text"] == "Hello there, Bob."


SRT_BAD = {
    "malformed": ("1\n00:00:01,000 --> 00:00:02,000\nFine.\n\n2\n00:00:02 -> 00:00:03\nBroken time.\n\n"
                  "3\n00:00:04,000 --> 00:00:03,000\nBackwards.\n",
                  "cue 2 has no valid time line ('00:00:01,000 --> 00:00:02,500'); found '00:00:02 -> 00:00:03'; "
                  "cue 3 ends (00:00:03,000) before it starts (00:00:04,000)."),
    "overlapping": ("1\n00:00:01,000 --> 00:00:03,500\nFirst.\n\n2\n00:00:03,000 --> 00:00:04,000\nSecond.\n",
                    "cue 2 starts at 00:00:03,000, before cue 1 ends (00:00:03,500)."),
    "empty cue": ("1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n", "cue 1 has no text."),
}


@pytest.mark.parametrize("case", sorted(SRT_BAD))
def test_bad_srt(work: Path, tmp_path: Path, case: str) -> None:
    text, message = SRT_BAD[case]
    (tmp_path / "s.srt").write_text(text, encoding="utf-8")
    run = cli(work, "import", str(tmp_path / "s.srt"), "--project", str(tmp_path / "p"), "--default-voice",
              "alice.wav")
    assert one_error(run) == f"error: {tmp_path / 's.srt'}: {message}"
    assert not (tmp_path / "p").exists()


def test_bad_vtt(work: Path, tmp_path: Path) -> None:
    (tmp_path / "s.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nOne.\n\n00:01.500 --> 00:03.000\nTwo.\n",
                                    encoding="utf-8")
    with pytest.raises(ImportProblem, match=r"cue 2 starts at 00:00:01,500, before cue 1 ends \(00:00:02,000\)"):
        import_project(tmp_path / "s.vtt", tmp_path / "p", default_voice=str(work / "alice.wav"))
    (tmp_path / "n.vtt").write_text("00:01.000 --> 00:02.000\nOne.\n", encoding="utf-8")
    with pytest.raises(ImportProblem, match="does not start with WEBVTT"):
        import_project(tmp_path / "n.vtt", tmp_path / "p", default_voice=str(work / "alice.wav"))


def test_missing_clip_at_import(work: Path, tmp_path: Path) -> None:
    run = cli(work, "import", "script.txt", "--format", "script", "--project", str(tmp_path / "p"), "--voice",
              "Alice=alice.wav", "--voice", "Bob=gone.wav")
    assert one_error(run) == ("error: The voice clip for Bob, gone.wav, does not exist, and the voice library has no "
                              "voice of that name.")
    assert not (tmp_path / "p").exists()


def test_voice_library_names(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A speaker may be a voice of the library (``<data>/voices/<id>/voice.json`` + ``reference.wav``)."""
    monkeypatch.setenv("INDEXTTS2_DESKTOP_HOME", str(tmp_path / "home"))
    voice = tmp_path / "home" / "data" / "voices" / "20260101-000000-abcdef"
    voice.mkdir(parents=True)
    (voice / "voice.json").write_text(json.dumps({"name": "Deep Bob", "created": 1.0}), encoding="utf-8")
    shutil.copyfile(work / "bob.wav", voice / "reference.wav")
    with import_project(work / "script.txt", tmp_path / "p", "script",
                        voices={"Alice": str(work / "alice.wav"), "Bob": "Deep Bob"}) as project:
        assert project.voices["Bob"] == str((voice / "reference.wav").resolve())


# ------------------------------------------------------------------------------------ render


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_bad_clip_fails_its_lines_and_renders_the_others(work: Path, tmp_path: Path, case: str) -> None:
    shutil.copyfile(work / "bob.wav", tmp_path / "bob.wav")
    with make(work, tmp_path / "p", Bob=str(tmp_path / "bob.wav"), Alice=str(work / "alice.wav")):
        pass
    if case == "missing":
        (tmp_path / "bob.wav").unlink()
    else:
        shutil.copyfile(work / "corrupt.wav", tmp_path / "bob.wav")
    run = cli(work, *render_args(tmp_path / "p", work))
    assert run.returncode == 1, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("rendered 3 line(s), 0 already current, 0 locked, 3 failed")
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: line ") for e in errors), run.stderr
    expected = ("is missing. Put it back or choose another clip" if case == "missing"
                else f"The voice clip cannot be used: Cannot read {tmp_path / 'bob.wav'} as audio")
    assert all(expected in e for e in errors), errors
    data = read_json(tmp_path / "p")
    assert [bool(ln.get("takes")) for ln in data["lines"]] == [ln["speaker"] == "Alice" for ln in data["lines"]]
    assert all(expected in ln["error"] for ln in data["lines"] if ln["speaker"] == "Bob")
    # put the clip back: only the failed lines render
    shutil.copyfile(work / "bob.wav", tmp_path / "bob.wav")
    again = cli(work, *render_args(tmp_path / "p", work))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1].startswith("rendered 3 line(s), 3 already current")
    assert not any(ln.get("error") for ln in read_json(tmp_path / "p")["lines"])


def test_unwritable_project_folder(work: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    run = cli(work, "import", "script.txt", "--format", "script", "--project", str(blocker / "p"), "--voice",
              "Alice=alice.wav", "--voice", "Bob=bob.wav")
    assert one_error(run).startswith(f"error: Cannot create the project folder {blocker / 'p'}: Not a directory")

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    # root ignores directory permissions: run the CLI without the capabilities that let it do so
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--") if os.geteuid() == 0 else ()
    try:
        run = cli(work, "import", "script.txt", "--format", "script", "--project", str(folder / "p"), "--voice",
                  "Alice=alice.wav", "--voice", "Bob=bob.wav", prefix=prefix)
        assert one_error(run).startswith(f"error: Cannot create the project folder {folder / 'p'}: Permission denied")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)

    project = tmp_path / "made"
    assert cli(work, "import", "script.txt", "--format", "script", "--project", str(project), "--voice",
               "Alice=alice.wav", "--voice", "Bob=bob.wav", *FAST).returncode == 0
    before = (project / PROJECT_FILE).read_bytes()
    os.unlink(project / ".project.lock")  # a fresh folder state: the lock file must be made
    project.chmod(0o555)
    try:
        run = cli(work, *render_args(project, work), prefix=prefix)
        error = one_error(run)
        assert error.startswith(f"error: The project folder {project} is not writable (Permission denied); it is "
                                "open read-only."), error
    finally:
        project.chmod(0o755)
    assert (project / PROJECT_FILE).read_bytes() == before


def test_disk_full_while_writing_a_take(work: Path, engine: Engine, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with make(work, tmp_path / "p") as project:
        render(project, engine, only=[project.lines[0].id])
        before = (project.folder / PROJECT_FILE).read_bytes()
        real_write = sf.write

        def full(file, data, *args, **kwargs):  # half the take reaches the disk, then the disk is full
            real_write(file, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(sf, "write", full)
        with pytest.raises(TakeWriteError) as caught:
            render(project, engine)
        message = str(caught.value)
        assert message.startswith(f"Line {project.lines[1].id}: Could not write {project.folder / 'takes'}")
        assert "No space left on device" in message and "finished lines are kept" in message
        assert (project.folder / PROJECT_FILE).read_bytes() == before, "nothing recorded"
        assert sorted(p.name for p in (project.folder / "takes").iterdir()) == [f"{project.lines[0].id}-1.wav"]
        assert [project.status(ln) for ln in project.lines] == ["current"] + ["pending"] * 5
        monkeypatch.setattr(sf, "write", real_write)
        assert render(project, engine).rendered == 5


def test_half_written_take_is_never_taken(work: Path, engine: Engine, tmp_path: Path) -> None:
    """What a crash can leave: a temp file, and a complete file written but not yet recorded."""
    with make(work, tmp_path / "p") as project:
        first = project.lines[0].id
    takes = tmp_path / "p" / "takes"
    (takes / f".{first}-1-abc.wav.part").write_bytes(b"RIFF\x00\x00")
    write_clip(takes / f"{first}-1.wav", 0.5, 300.0)
    with Project.open(tmp_path / "p") as project:
        assert not list(takes.glob("*.part")), "temp files of interrupted writes are removed on open"
        assert project.status(project.lines[0]) == "pending"
        assert render(project, engine).rendered == 6
        take = project.lines[0].active_take
        assert take is not None and sf.info(str(takes / f"{first}-1.wav")).frames == take.samples


# ------------------------------------------------------------------------------------ project.json


@pytest.mark.parametrize("case", ["newer", "invalid"])
def test_unreadable_project_json_kept_and_last_good_copy_used(work: Path, tmp_path: Path, case: str) -> None:
    with make(work, tmp_path / "p") as project:
        project.set_text(project.lines[0].id, "Edited once.")
        good = (project.folder / BACKUP_FILE).read_bytes()
    main = tmp_path / "p" / PROJECT_FILE
    if case == "newer":
        data = json.loads(main.read_text(encoding="utf-8"))
        data["schema_version"] = 99
        bad = json.dumps(data).encode()
        reason = "was written by a newer IndexTTS2 Desktop (project format 99; this version reads up to 1)"
    else:
        bad = main.read_bytes()[:-40] + b'"broken'
        reason = "is not valid JSON (line"
    main.write_bytes(bad)
    with Project.open(tmp_path / "p") as project:
        assert len(project.notices) == 1 and reason in project.notices[0]
        assert "Opened the last good copy (project.json.bak)" in project.notices[0]
        assert project.lines[0].text == "Hello there, Bob."  # the copy from before the last edit
        kept = [p for p in (tmp_path / "p").iterdir() if p.name.startswith("project.json.unreadable-")]
        assert len(kept) == 1 and kept[0].read_bytes() == bad
        assert json.loads(main.read_bytes()) == json.loads(good)
    # without a usable copy: a clear error, the file untouched
    (tmp_path / "p" / BACKUP_FILE).unlink()
    main.write_bytes(bad)
    with pytest.raises(EngineError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Project.open(tmp_path / "p")
    assert main.read_bytes() == bad
    run = cli(work, "status", str(tmp_path / "p"))
    assert reason in one_error(run)


# ------------------------------------------------------------------------------------ two instances


def test_second_instance_is_told_and_read_only(work: Path, tmp_path: Path) -> None:
    with make(work, tmp_path / "p") as first:
        second = Project.open(tmp_path / "p")
        try:
            assert second.read_only
            assert second.notices == [f"The project {tmp_path / 'p'} is already open in process {os.getpid()} on "
                                      f"{os.uname().nodename}; it is open read-only here. Close it there to edit or "
                                      "render it."]
            with pytest.raises(EngineError, match="open read-only"):
                second.set_text(second.lines[0].id, "Changed.")
        finally:
            second.close()
        first.set_text(first.lines[0].id, "The first instance still edits.")
        # another process: render is refused with the same words, nothing written
        before = (tmp_path / "p" / PROJECT_FILE).read_bytes()
        run = cli(work, *render_args(tmp_path / "p", work))
        assert f"is already open in process {os.getpid()}" in one_error(run)
        assert (tmp_path / "p" / PROJECT_FILE).read_bytes() == before
        status = cli(work, "status", str(tmp_path / "p"))
        assert status.returncode == 0 and "6 pending" in status.stdout
    # closed: the next process gets it
    cmd = [sys.executable, "-c", "from core.project import Project; p = Project.open(__import__('sys').argv[1]); "
           "print(p.read_only)", str(tmp_path / "p")]
    out = subprocess.run(cmd, cwd=REPO, env=env(work), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
