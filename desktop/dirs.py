"""Where the desktop app keeps its files (config, logs, data, cache).

Everything goes through :func:`app_dirs`, so tests (and a portable install) can move all user
folders with one environment variable, ``INDEXTTS2_DESKTOP_HOME``, or by passing an :class:`AppDirs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from core.models import APP_NAME  # one name, so the CLI and the app share their folders

HOME_ENV = "INDEXTTS2_DESKTOP_HOME"


@dataclass(frozen=True)
class AppDirs:
    config: Path  # settings.json, state.json, presets/
    log: Path  # rotating log + faulthandler file
    data: Path  # voice library, default output folder
    cache: Path  # the engine's per-voice conditioning cache

    @property
    def presets(self) -> Path:
        return self.config / "presets"

    @property
    def voices(self) -> Path:
        return self.data / "voices"

    @property
    def outputs(self) -> Path:
        return self.data / "outputs"

    @classmethod
    def under(cls, root: str | Path) -> AppDirs:
        root = Path(root)
        return cls(config=root / "config", log=root / "logs", data=root / "data", cache=root / "cache")

    def ensure(self) -> AppDirs:
        for path in (self.config, self.log, self.data, self.presets, self.voices):
            path.mkdir(parents=True, exist_ok=True)
        return self


def app_dirs() -> AppDirs:
    """The user folders: ``$INDEXTTS2_DESKTOP_HOME/{config,logs,data}`` when set, else platformdirs."""
    override = os.environ.get(HOME_ENV)
    if override:
        return AppDirs.under(override)
    return AppDirs(
        config=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        log=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        data=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        cache=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
    )
