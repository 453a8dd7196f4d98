#!/usr/bin/env bash
# One-click launcher for Linux/macOS: venv beside the app, the right torch build, the project, models, app.
#   ./launch.sh            install what is missing, then start the app
#   ./launch.sh --test     install with test extras, then run the test suite
#   ./launch.sh --selftest install, then run the health check (no window left open)
# Environment: INDEXTTS_PYTHON (interpreter), INDEXTTS_TORCH_SPEC (e.g. "torch==2.13.0"),
#              INDEXTTS_TORCH_INDEX (pip index URL for torch; empty = PyPI).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="$here/.venv"
mode="app"
case "${1:-}" in
  --test) mode="test"; shift ;;
  --selftest) mode="selftest"; shift ;;
esac

say() { printf '[launch] %s\n' "$*"; }
fail() { printf '[launch] ERROR: %s\n' "$*" >&2; exit 1; }

python_bin="${INDEXTTS_PYTHON:-}"
if [ -z "$python_bin" ]; then
  # the first interpreter that actually runs and is 3.10+ (pyenv shims may exist for versions not installed)
  for candidate in python3 python3.12 python3.11 python3.10; do
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || fail "Python 3.10+ not found. Install it (e.g. 'sudo apt install python3 python3-venv' or from python.org) and run again."
"$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$python_bin is not a working Python 3.10 or newer. Install Python 3.10+ and run again."
"$python_bin" -c 'import tkinter' 2>/dev/null \
  || say "note: Tk is missing for $python_bin (Debian/Ubuntu: sudo apt install python3-tk); the app window needs it."

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment in $venv"
  "$python_bin" -m venv "$venv" || fail "could not create a venv (Debian/Ubuntu: sudo apt install python3-venv)."
fi
py="$venv/bin/python"

if "$py" -c 'import torch' 2>/dev/null; then
  say "torch already installed: $("$py" -c 'import torch; print(torch.__version__)')"
else
  spec="${INDEXTTS_TORCH_SPEC:-torch}"
  index="${INDEXTTS_TORCH_INDEX-unset}"
  if [ "$index" = "unset" ]; then
    if [ "$(uname -s)" = "Linux" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
      index="https://download.pytorch.org/whl/cpu"   # no NVIDIA GPU: the small CPU build
    else
      index=""                                        # PyPI: CUDA build on Linux, MPS/CPU on macOS
    fi
  fi
  say "installing $spec ${index:+from $index}"
  if [ -n "$index" ]; then
    "$py" -m pip install --quiet "$spec" --index-url "$index" || "$py" -m pip install --quiet "$spec" \
      || fail "could not install torch. Check your internet connection and run again."
  else
    "$py" -m pip install --quiet "$spec" || fail "could not install torch. Check your internet connection and run again."
  fi
fi

stamp="$venv/.installed-$mode"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  extras=""
  [ "$mode" = "test" ] && extras="[test,build]"
  say "installing IndexTTS2 Desktop$extras and its dependencies"
  "$py" -m pip install --quiet -e ".$extras" || fail "dependency installation failed; see the pip messages above."
  touch "$stamp"
else
  say "dependencies up to date"
fi

case "$mode" in
  test)
    say "running the test suite"
    exec "$py" -m pytest "$@" ;;
  selftest)
    say "running the self-test"
    exec "$py" main.py --selftest "$@" ;;
  app)
    if ! "$py" main.py models check --quiet; then
      say "models are missing: starting the model setup (Ctrl+C to skip; the app can do it later)"
      "$py" main.py models download || say "model setup did not finish; the app will explain what is missing"
    fi
    say "starting the app"
    exec "$py" main.py "$@" ;;
esac
