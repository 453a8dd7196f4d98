"""The user's pronunciation dictionary: term -> reading, for any language or for Chinese or English only.

Stored as ``pronunciation.yaml`` in the user data folder, in the glossary format the text front end reads
(:func:`core.text.normalizer.load_glossary`), so importing and exporting are plain copies of that format::

    IndexTTS: Index T T S            # any language
    重庆: {zh: chong2 qing4}         # Chinese only (pinyin with tone digits)
    Nguyen: {en: win, zh: 阮}        # a reading per language

A term with an "any language" reading and a language-specific one is written with the "any" reading filled in
for the other language. Writes are atomic (:func:`desktop.jsonstore.atomic_write_text`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.text.normalizer import GlossaryError, load_glossary
from desktop.errors import UserError
from desktop.jsonstore import atomic_write_text

ANY = "any"
LANGUAGES: tuple[str, ...] = (ANY, "zh", "en")  # the languages the text front end tells apart
LANGUAGE_LABELS: dict[str, str] = {ANY: "Any language", "zh": "Chinese", "en": "English"}
FILE_NAME = "pronunciation.yaml"
FILETYPES = [("Pronunciation dictionary (YAML)", "*.yaml *.yml"), ("All files", "*")]


class DictionaryError(UserError):
    """The dictionary file cannot be read or written, or an entry is not usable (the message says which)."""


@dataclass(frozen=True)
class Entry:
    term: str
    reading: str
    language: str = ANY

    def check(self) -> Entry:
        term, reading = self.term.strip(), self.reading.strip()
        if not term:
            raise DictionaryError("Type the word or name to respell in 'Term'.")
        if not reading:
            raise DictionaryError(f"Type how '{term}' should be read in 'Reading'.")
        if self.language not in LANGUAGES:
            raise DictionaryError(f"'{self.language}' is not a language of the dictionary.")
        return Entry(term, reading, self.language)


def to_glossary(entries: Iterable[Entry]) -> dict[str, str | dict[str, str]]:
    """The glossary mapping of ``entries`` (a later entry for the same term and language wins)."""
    by_term: dict[str, dict[str, str]] = {}
    for entry in entries:
        by_term.setdefault(entry.term, {})[entry.language] = entry.reading
    glossary: dict[str, str | dict[str, str]] = {}
    for term, readings in by_term.items():
        if set(readings) == {ANY}:
            glossary[term] = readings[ANY]
            continue
        fallback = readings.get(ANY)
        per_language = {lang: readings.get(lang, fallback) for lang in LANGUAGES[1:]}
        glossary[term] = {lang: reading for lang, reading in per_language.items() if reading is not None}
    return glossary


def from_glossary(glossary: Mapping[str, str | Mapping[str, str]]) -> list[Entry]:
    entries: list[Entry] = []
    for term, value in glossary.items():
        if isinstance(value, Mapping):
            entries.extend(Entry(term, str(reading), str(lang)) for lang, reading in value.items())
        else:
            entries.append(Entry(term, str(value)))
    return entries


def _yaml(glossary: Mapping[str, object]) -> str:
    import yaml

    head = "# IndexTTS2 Desktop pronunciation dictionary: term: reading, or term: {zh: reading, en: reading}\n"
    return head + (yaml.safe_dump(dict(glossary), allow_unicode=True, sort_keys=False) if glossary else "")


def read_file(path: Path) -> list[Entry]:
    """The entries of a glossary YAML file; a DictionaryError naming the file when it cannot be used."""
    try:
        entries = from_glossary(load_glossary(path))
    except GlossaryError as exc:
        raise DictionaryError(f"{Path(path).name} cannot be used as a pronunciation dictionary: {exc}.") from exc
    unknown = sorted({e.language for e in entries if e.language not in LANGUAGES})
    if unknown:
        raise DictionaryError(f"{Path(path).name} has readings for {', '.join(unknown)}; the dictionary knows "
                              f"{', '.join(LANGUAGES[1:])} (or one reading for any language).")
    return entries


def write_file(path: Path, entries: Iterable[Entry]) -> None:
    try:
        atomic_write_text(Path(path), _yaml(to_glossary(entries)))
    except OSError as exc:
        raise DictionaryError(f"Could not write {path}: {exc.strerror or exc}.") from exc


class PronunciationDictionary:
    """``<data>/pronunciation.yaml``: what the engine is given and the editor shows."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FILE_NAME

    def load(self) -> list[Entry]:
        return read_file(self.path) if self.path.exists() else []

    def save(self, entries: Iterable[Entry]) -> dict[str, str | dict[str, str]]:
        """Write the entries; returns the glossary the engine is to use."""
        entries = list(entries)
        write_file(self.path, entries)
        return to_glossary(entries)
