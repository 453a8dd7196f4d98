"""IndexTTS2 Desktop entry point.

    python main.py                      start the desktop app
    python main.py --standin            start the app with the stand-in engine (no models needed)
    python main.py --selftest           health check: imports, main window, tiny models; exit 0 when healthy
    python main.py synth --text ... --voice ref.wav --out out.wav [emotion and generation options]
    python main.py models check|download [--dir DIR] [--source hf|modelscope]
    python main.py device               say which device inference would use, after a real test operation
"""

from __future__ import annotations

import sys


def _guard_streams() -> None:
    # A windowed PyInstaller exe has no stdout/stderr; writes to None would crash the app.
    import io

    if sys.stdout is None:
        sys.stdout = io.StringIO()
    if sys.stderr is None:
        sys.stderr = io.StringIO()


COMMANDS = ("synth", "models", "device")


def main(argv: list[str] | None = None) -> int:
    _guard_streams()
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in COMMANDS:
        from core.cli import run

        return run(args)

    import argparse

    parser = argparse.ArgumentParser(prog="main.py", description="IndexTTS2 Desktop: clone a voice and speak any text.")
    parser.add_argument("--standin", action="store_true", help="use the stand-in engine (no models needed)")
    parser.add_argument("--selftest", action="store_true", help="check that the app is healthy and exit")
    parser.add_argument("--model-dir", help="model folder (default: settings, $INDEXTTS_MODEL_DIR, user data dir)")
    parser.add_argument("--device", default=None, help="auto, cuda, cpu or mps")
    parser.add_argument("commands", nargs="*", help=f"one of: {', '.join(COMMANDS)} (see 'main.py synth --help')")
    opts = parser.parse_args(args)
    if opts.commands:
        parser.error(f"unknown command {opts.commands[0]!r}; use one of: {', '.join(COMMANDS)}")
    if opts.selftest:
        from core.selftest import run_selftest

        return run_selftest(model_dir=opts.model_dir, gui=True)
    from desktop.app import run as run_app

    return run_app(standin=opts.standin, model_dir=opts.model_dir)


if __name__ == "__main__":
    sys.exit(main())
