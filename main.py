"""IndexTTS2 Desktop entry point.

    python main.py                      start the desktop app
    python main.py --standin            start the app with the stand-in engine (no models needed)
    python main.py --selftest           health check: imports, main window, tiny models; exit 0 when healthy
    python main.py synth --text ... --voice ref.wav --out out.wav [emotion and generation options]
    python main.py models check|download [--dir DIR] [--source hf|modelscope]
    python main.py device               say which device inference would use, after a real test operation
    python main.py project import|render|export ...   multi-line projects (scripts, books, subtitles)
    python main.py serve [--host H] [--port P] [--voices DIR] [--api-key KEY]   the OpenAI-compatible speech server
"""

from __future__ import annotations

import sys
from typing import Any


def _guard_streams() -> None:
    # A windowed PyInstaller exe has no stdout/stderr; writes to None would crash the app.
    import io

    if sys.stdout is None:
        sys.stdout = io.StringIO()
    if sys.stderr is None:
        sys.stderr = io.StringIO()


COMMANDS = ("synth", "models", "device", "project", "serve")


def _window_check(engine: Any) -> int:
    """Open and close the main window (the GUI half of --selftest; core never imports tkinter)."""
    import logging

    try:
        import desktop.app as app
    except Exception:  # noqa: BLE001 - report any import failure of the GUI as unhealthy
        logging.getLogger("selftest").exception("the desktop app (desktop.app) cannot be imported")
        return 1
    if not hasattr(app, "selftest"):
        logging.getLogger("selftest").error("desktop.app has no selftest(engine) function")
        return 1
    if engine is None:  # the tiny engine could not be built: check the window with an unloaded real engine
        try:
            from core.engine import Engine

            engine = Engine()
        except Exception:  # noqa: BLE001
            from desktop.standin import StandInEngine

            engine = StandInEngine()
    return app.selftest(engine)


def _selftest(model_dir: str | None, report: str | None, window: bool = True) -> int:
    import logging

    from core.selftest import run_selftest

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return run_selftest(model_dir=model_dir, gui=_window_check if window else None, report_path=report)


def main(argv: list[str] | None = None) -> int:
    _guard_streams()
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        from core.cli import run

        return run(args)

    import argparse
    import re

    from core.device import DEVICES

    parser = argparse.ArgumentParser(prog="main.py", description="IndexTTS2 Desktop: clone a voice and speak any text.")
    parser.add_argument("--standin", action="store_true", help="use the stand-in engine (no models needed)")
    parser.add_argument("--selftest", action="store_true", help="check that the app is healthy and exit")
    parser.add_argument("--selftest-report", metavar="JSON", help="with --selftest: also write the results here")
    parser.add_argument("--no-window", action="store_true", help="with --selftest: skip the main-window check")
    parser.add_argument("--model-dir", help="model folder (default: settings, $INDEXTTS_MODEL_DIR, user data dir)")
    parser.add_argument("--device", default=None, help="auto, cuda, cuda:N, cpu or mps (this run; default: Settings)")
    parser.add_argument("commands", nargs="*", help=f"one of: {', '.join(COMMANDS)} (see 'main.py synth --help')")
    opts = parser.parse_args(args)
    if opts.commands:
        parser.error(f"unknown command {opts.commands[0]!r}; use one of: {', '.join(COMMANDS)}")
    if opts.selftest:
        return _selftest(opts.model_dir, opts.selftest_report, window=not opts.no_window)
    device = (opts.device or "").strip().lower() or None
    if device is not None and not (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        parser.error(f"unknown device {opts.device!r}; use auto, cuda, cuda:N, cpu or mps")
    from desktop.app import run as run_app

    return run_app(standin=opts.standin, model_dir=opts.model_dir, device=device)


if __name__ == "__main__":
    sys.exit(main())
