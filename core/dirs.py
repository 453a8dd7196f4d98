"""The user folders every front end shares (torch-free, Tk-free).

``$INDEXTTS2_DESKTOP_HOME/{config,logs,data,cache}`` when that variable is set (tests, portable installs), else
the platform's folders for :data:`core.models.APP_NAME`. The desktop's ``desktop.dirs`` uses the same layout; the
server reads the voice library and keeps its API key through this module, without importing the desktop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import platformdirs

from .models import APP_NAME

HOME_ENV = "INDEXTTS2_DESKTOP_HOME"
Kind = Literal["config", "log", "data", "cache"]
_UNDER_HOME = {"config": "config", "log": "logs", "data": "data", "cache": "cache"}


def user_folder(kind: Kind) -> Path:
    """The folder of one kind: settings and the API key (config), logs, the voice library (data), caches."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override) / _UNDER_HOME[kind]
    finders: dict[str, Callable[..., str]] = {
        "config": platformdirs.user_config_dir, "log": platformdirs.user_log_dir,
        "data": platformdirs.user_data_dir, "cache": platformdirs.user_cache_dir,
    }
    finder = finders[kind]
    return Path(finder(APP_NAME, appauthor=False))


def library_folder() -> Path:
    """The voice library: ``<data>/voices``."""
    return user_folder("data") / "voices"
