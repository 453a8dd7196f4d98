"""Where the parity goldens live: ``$INDEXTTS_REFERENCE``, else ``../shared/reference``, else ``tests/reference``."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def reference_root() -> Path:
    env = os.environ.get("INDEXTTS_REFERENCE")
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"INDEXTTS_REFERENCE={env} is not a directory")
        return root
    for candidate in (REPO.parent / "shared" / "reference", REPO / "tests" / "reference"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no reference set: set INDEXTTS_REFERENCE or provide ../shared/reference")


def ref(*parts: str) -> Path:
    """A path inside the reference set; a missing file fails the test (never skips it)."""
    path = reference_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"reference file missing: {path}")
    return path
