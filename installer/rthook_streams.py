# PyInstaller runtime hook: runs before main.py in the built app.
# A windowed exe (console=False) starts with sys.stdout/sys.stderr set to None; any library that prints,
# logs to stderr or draws a progress bar (tqdm, huggingface_hub) would crash. Point them at os.devnull until
# the app installs its own log handlers (main.py's _guard_streams does the same when run from source).
import os
import sys

for _name in ("stdout", "stderr"):
    if getattr(sys, _name) is None:
        setattr(sys, _name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
