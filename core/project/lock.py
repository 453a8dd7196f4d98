"""One writer per project folder: an OS file lock on ``.project.lock`` (flock on POSIX, msvcrt on Windows).

The lock is released by the OS when the process ends, however it ends, so a crash never leaves a project
locked. The file holds the holder's process id and host for the message the second opener gets.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import IO

LOCK_NAME = ".project.lock"
_WIN_OFFSET = 1 << 20  # Windows locks a byte range: lock one byte past the text so others can still read it


class ProjectLock:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> bool:
        """Take the lock; False when another process (or another open of this project) holds it.
        OSError when the lock file cannot be created (read-only folder)."""
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            _lock(fh)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """Who holds the lock, in words (best effort)."""
        try:
            words = self.path.read_text(encoding="utf-8").split()
        except OSError:
            return "another process"
        if len(words) >= 2:
            return f"process {words[0]} on {words[1]}"
        return "another process"

    def release(self) -> None:
        if self._fh is not None:
            try:
                _unlock(self._fh)
            finally:
                self._fh.close()
                self._fh = None


if os.name == "nt":
    import msvcrt

    def _lock(fh: IO[str]) -> None:
        fh.seek(_WIN_OFFSET)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]

    def _unlock(fh: IO[str]) -> None:
        fh.seek(_WIN_OFFSET)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]

else:
    import fcntl

    def _lock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh: IO[str]) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
