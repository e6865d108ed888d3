#!/usr/bin/env bash
# Build the one-folder desktop app with PyInstaller (Linux; see packaging/README.md for Windows and macOS), then
# check it: the self-test offscreen, the folder's size and the time to the window.
#   packaging/build.sh            (from anywhere; uses the project's .venv)
# Output: dist/jrft-desktop/ (run dist/jrft-desktop/jrft-desktop). Not part of CI: it takes several minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PYINSTALLER_VERSION="6.22.3"

if ! "$PYTHON" -c "import PyInstaller, sys; sys.exit(PyInstaller.__version__ != '$PYINSTALLER_VERSION')" 2>/dev/null; then
    "$PYTHON" -m pip install -c constraints.txt "pyinstaller==$PYINSTALLER_VERSION"
fi
if "$PYTHON" -c "import torch, sys; sys.exit(torch.version.cuda is None)"; then
    echo "note: this torch is a CUDA build; the folder will hold its CUDA libraries (several GB)" >&2
fi

started=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" packaging/jrft-desktop.spec
built=$(date +%s)
APP="$ROOT/dist/jrft-desktop/jrft-desktop"

echo "build: $((built - started)) s; folder: $(du -sh "$ROOT/dist/jrft-desktop" | cut -f1)" \
     "($(find "$ROOT/dist/jrft-desktop" -type f | wc -l) files)"
QT_QPA_PLATFORM=offscreen "$APP" --self-test --timing
"$PYTHON" packaging/startup_time.py --runs 3 "$APP"
