import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import reference_root  # noqa: E402


@pytest.fixture(scope="session")
def refroot() -> Path:
    return reference_root()
