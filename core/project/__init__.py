"""Projects: many lines with their own speakers and emotions, rendered one at a time into takes that survive a
crash, and exported as audio, audiobook (M4B), subtitles or per-line files.

* :mod:`.model`: :class:`Project`, :class:`Line`, :class:`Take`, :class:`Chapter` and the edit methods;
* :mod:`.store`: ``project.json`` (versioned, atomic, last good copy) and :mod:`.lock` (one writer);
* :mod:`.importers`: plain text, Markdown, scripts, SRT and WebVTT;
* :mod:`.render`: the render queue over ``Engine.synthesize``;
* :mod:`.export`: WAV, FLAC, MP3, Opus, M4B, SRT, WebVTT and per-line files with a CSV manifest.

Everything here is torch-free until a render starts.
"""

from .model import Chapter, Line, Project, ProjectEvent, Take

__all__ = ["Chapter", "Line", "Project", "ProjectEvent", "Take"]
