"""The importers and the project model without models: what each format turns into, chapters, the structure
edits a table makes, save-as, and project.json as a person would read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import write_clip

from core.api import EngineError
from core.project import Project, ProjectEvent
from core.project.importers import ImportProblem, import_project, parse
from core.project.store import BACKUP_FILE, PROJECT_FILE


def said(text: str, fmt: str) -> list[tuple[str, str, str | None]]:
    return [(ln.speaker, ln.text, ln.chapter) for ln in parse(text, fmt).lines]


def test_plain_text_paragraphs() -> None:
    text = "First paragraph,\nwrapped over\n  two lines.\n\n\n   \nSecond one.\r\n\nThird.\n"
    assert said(text.replace("\r\n", "\n"), "text") == [("Narrator", "First paragraph, wrapped over two lines.", None),
                                                        ("Narrator", "Second one.", None), ("Narrator", "Third.", None)]


def test_markdown_headings_become_chapters() -> None:
    text = ("# Part One\n\nIt was *very* dark, said [the guide](http://x).\n\n## A Scene\n\n- a list item\n"
            "\n```\ncode is not read\n```\n\n---\n\n> A quote with `code`.\n\n# Empty Chapter\n# Part Two\nLast.\n")
    assert said(text, "markdown") == [
        ("Narrator", "It was very dark, said the guide.", "Part One"), ("Narrator", "a list item", "A Scene"),
        ("Narrator", "A quote with code.", None), ("Narrator", "Last.", "Part Two")]


def test_script_forms_and_continuation() -> None:
    text = "# Act 1\nAlice: Hi: it is 10:30.\n  and late.\n[Dr. Bob] Indeed.\n\nAlice : Fine.\n"
    found = parse(text, "script")
    assert [(ln.speaker, ln.text, ln.chapter) for ln in found.lines] == [
        ("Alice", "Hi: it is 10:30. and late.", "Act 1"), ("Dr. Bob", "Indeed.", None), ("Alice", "Fine.", None)]
    assert found.speakers == ["Alice", "Dr. Bob"]
    with pytest.raises(ImportProblem, match="line 1 has no speaker"):
        parse("no speaker here\nAlice: Hi.\n", "script")


def test_vtt_cues_voices_and_notes() -> None:
    text = ("WEBVTT - a title\n\nNOTE this is skipped\n\nintro\n00:01.000 --> 00:02.500 align:start\n"
            "<v Alice>Hello <b>you</b>.\n\n01:00:03.000 --> 01:00:04.000\nPlain cue.\n")
    found = parse(text, "vtt")
    assert [(ln.speaker, ln.text, ln.start_ms, ln.end_ms, ln.pause_ms) for ln in found.lines] == [
        ("Alice", "Hello you.", 1000, 2500, 0), ("Narrator", "Plain cue.", 3_603_000, 3_604_000, 0)]


def test_srt_problems_listed_together() -> None:
    text = "".join(f"{i}\n00:00:0{i},000 --> 00:00:0{i},500\n\n" for i in range(1, 4)) + "x\ny\n"
    with pytest.raises(ImportProblem) as caught:
        parse(text, "srt")
    assert caught.value.problems == ["cue 1 has no text", "cue 2 has no text", "cue 3 has no text",
                                     "cue 4 has no valid time line ('00:00:01,000 --> 00:00:02,500'); found 'x'"]


def test_srt_round_trip_times() -> None:
    text = "1\n00:00:01,250 --> 00:00:02,000\nOne.\n\n2\n00:01:02,003 --> 01:02:03,4\nTwo <i>lines</i>\nhere.\n"
    assert [(ln.text, ln.start_ms, ln.end_ms) for ln in parse(text, "srt").lines] == [
        ("One.", 1250, 2000), ("Two lines here.", 62_003, 3_723_400)]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    clip = write_clip(tmp_path / "voice.wav", 1.0)
    (tmp_path / "s.txt").write_text("# One\nA: First.\nB: Second.\n# Two\nA: Third.\n", encoding="utf-8")
    p = import_project(tmp_path / "s.txt", tmp_path / "p", "script", voices={"A": str(clip), "B": str(clip)})
    yield p
    p.close()


def test_structure_edits_emit_events_and_save(project: Project, tmp_path: Path) -> None:
    events: list[ProjectEvent] = []
    unsubscribe = project.subscribe(events.append)
    new = project.insert_line(1, "  Inserted.  ", "B", pause_ms=100)
    assert [ln.text for ln in project.lines] == ["First.", "Inserted.", "Second.", "Third."]
    assert new.id == "00004" and events[-1] == ProjectEvent("structure", ("00004",))
    project.move_line(new.id, 3)
    assert [ln.id for ln in project.lines] == ["00001", "00002", "00003", "00004"]
    project.assign(["00001", "00002"], speaker="B")
    assert events[-1] == ProjectEvent("lines", ("00001", "00002"))
    project.remove_lines(["00002"])
    assert [c.title for c in project.chapters()] == ["One", "Two"]
    project.set_chapter("00003", None)
    assert [(c.title, c.count) for c in project.chapters()] == [("One", 3)]
    unsubscribe()
    project.set_text("00001", "Quiet.")
    assert events[-1].kind == "structure"
    on_disk = json.loads((project.folder / PROJECT_FILE).read_text(encoding="utf-8"))
    assert [(d["id"], d["text"], d["speaker"]) for d in on_disk["lines"]] == [
        ("00001", "Quiet.", "B"), ("00003", "Third.", "A"), ("00004", "Inserted.", "B")]
    backup = json.loads((project.folder / BACKUP_FILE).read_text(encoding="utf-8"))
    assert backup["lines"][0]["text"] == "First."  # the copy before the last change
    with pytest.raises(EngineError, match="needs a speaker"):
        project.set_speaker("00001", " ")
    with pytest.raises(EngineError, match="pause after a line"):
        project.set_pause("00001", -5)


def test_project_json_is_readable(project: Project) -> None:
    text = (project.folder / PROJECT_FILE).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "{" and lines[1] == ' "schema_version": 1,'
    assert '  {"id": "00001", "text": "First.", "speaker": "A", "pause_ms": 400, "chapter": "One"},' in lines


def test_save_as_copies_the_project(project: Project, tmp_path: Path) -> None:
    (project.folder / "takes" / "00001-1.wav").write_bytes(b"stand-in take")
    from core.project.model import Take

    project.lines[0].takes.append(Take(1, "takes/00001-1.wav", "k", 1, 10, 22050))
    project.lines[0].active = 1
    project.save()
    copy = project.save_as(tmp_path / "copy")
    try:
        assert (copy.folder / "takes" / "00001-1.wav").read_bytes() == b"stand-in take"
        assert [ln.to_dict() for ln in copy.lines] == [ln.to_dict() for ln in project.lines]
        assert not copy.read_only
        with pytest.raises(EngineError, match="not empty"):
            project.save_as(tmp_path / "copy")
    finally:
        copy.close()


def test_create_refuses_an_existing_project(project: Project, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="already holds a project"):
        import_project(tmp_path / "s.txt", project.folder, "script", default_voice=str(tmp_path / "voice.wav"))
