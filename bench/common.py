"""What every bench needs: the released config.yaml (from the reference set) and the peak RSS."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from core.config import IndexTTSConfig, load_config  # noqa: E402


def real_config_path() -> Path:
    """The official IndexTTS-2 ``checkpoints/config.yaml`` (shipped in the reference set's ``data/``)."""
    from reference import reference_root

    return reference_root() / "data" / "config.yaml"


def real_config() -> IndexTTSConfig:
    return load_config(real_config_path())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
