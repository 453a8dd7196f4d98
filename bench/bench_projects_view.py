"""The Projects view with a book: how long the table takes and whether the window keeps answering.

    xvfb-run -a python bench/bench_projects_view.py [--chars 500000] [--markdown | --script]

Opens the real main window (stand-in engine) and imports a ``--chars`` book (the text of bench_project.book)
through the Projects view (``--script``: a dialogue of short lines, many more rows), then prints: the import
(parse + first save, in the worker) until every row is in the table, the longest the Tk loop went without servicing
an ``after(10)`` callback meanwhile, one edit (a row update and the save of project.json), one move (the whole
table filled again) and one bulk speaker change of every line (every row refreshed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_project import book  # noqa: E402
from gui_helpers import close_studio, ensure_display, make_studio, wait_until  # noqa: E402


def dialogue(chars: int) -> str:
    """A script of short lines (``Name: text``), about ``chars`` characters."""
    rows, size, n = [], 0, 0
    while size < chars:
        row = f"{('Alice', 'Bob')[n % 2]}: Line {n}, short and quick."
        rows.append(row)
        size, n = size + len(row) + 1, n + 1
    return "\n".join(rows)


class Ticks:
    """Records when the Tk loop serviced an after(10) chain; ``longest`` is the worst gap."""

    def __init__(self, root, until) -> None:
        self.root, self.until, self.times = root, until, [time.perf_counter()]
        root.after(10, self.tick)

    def tick(self) -> None:
        self.times.append(time.perf_counter())
        if not self.until():
            self.root.after(10, self.tick)

    @property
    def longest(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False)) if len(self.times) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=500_000)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--script", action="store_true", help="a dialogue of short lines instead (many more rows)")
    args = ap.parse_args()
    ensure_display()
    work = Path(tempfile.mkdtemp(prefix="bench-projects-view-"))
    s = make_studio(work / "home")
    app, view = s.app, s.app.projects
    app.voice_panel.set_clip(s.voice)
    src = work / ("book.md" if args.markdown else "book.script" if args.script else "book.txt")
    src.write_text(dialogue(args.chars) if args.script else book(args.chars, args.markdown), encoding="utf-8")
    try:
        t0 = time.perf_counter()
        ticks = Ticks(s.root, lambda: view.job is None and view.table.filled_at is not None)
        view.import_file(src)
        wait_until(s.root, lambda: view.table.filled_at is not None, 120)
        lines = len(view.project.lines)
        print(f"book: {args.chars} characters, {lines} lines, {len(view.project.chapters())} chapter(s)")
        print(f"import (worker) until every row is in the table: {(view.table.filled_at - t0) * 1000:.0f} ms; "
              f"longest Tk stall meanwhile {ticks.longest * 1000:.0f} ms")

        line = view.project.lines[lines // 2]
        t = time.perf_counter()
        view.edit_cell(line.id, "text", "A shorter line for the bench.")
        s.root.update_idletasks()
        print(f"one edit (save project.json + one row): {(time.perf_counter() - t) * 1000:.1f} ms")

        t = time.perf_counter()
        ticks = Ticks(s.root, lambda: view.table.filled_at is not None and view.table.filled_at > t)
        view.move_line(line.id, 0)
        wait_until(s.root, lambda: view.table.filled_at is not None and view.table.filled_at > t, 120)
        print(f"one move (save + the whole table again): {(view.table.filled_at - t) * 1000:.0f} ms; longest Tk "
              f"stall meanwhile {ticks.longest * 1000:.0f} ms")

        ids = [line.id for line in view.project.lines]
        t = time.perf_counter()
        ticks = Ticks(s.root, lambda: view.table.tree.item(ids[-1], "values")[1] == "Carol")
        view.assign_speaker("Carol", ids)  # a new speaker for every line: every row is refreshed
        wait_until(s.root, lambda: view.table.tree.item(ids[-1], "values")[1] == "Carol", 120)
        print(f"every line a new speaker (one save, every row refreshed): {(time.perf_counter() - t) * 1000:.0f} ms; "
              f"longest Tk stall meanwhile {ticks.longest * 1000:.0f} ms")
    finally:
        close_studio(s)


if __name__ == "__main__":
    main()
