#!/usr/bin/env bash
# The library and the Slicer module's Qt-free layer under Python 3.12 (Slicer 5.10+'s Python), without torch.
#
# Builds a Python 3.12 virtual environment with DoseSegLib's torch-free dependencies (the pins of
# requirements.txt minus torch and MONAI, plus slicer-core for the MRML tests), checks that
# `import DoseSegLib` does not import torch, byte-compiles every file, and runs the test suite:
# a test that needs torch or MONAI is reported as skipped (scripts/torchless_pytest.py), any
# other failure fails the check.
#
#   bash scripts/check_py312.sh            # the tests not marked slow
#   bash scripts/check_py312.sh -k mrml    # extra arguments go to pytest
#
# PYTHON312 picks the interpreter (else python3.12 on PATH, pyenv's 3.12, /usr/bin/python3.12);
# DOSESEG_PY312_VENV the environment's folder (default /tmp/doseseg-py312, reused when present).
# Without any Python 3.12 the check is skipped with a message (exit code 0).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python312() {
    local candidate
    for candidate in "${PYTHON312:-}" "$(command -v python3.12 2>/dev/null || true)" \
        "$(pyenv prefix 3.12 2>/dev/null | head -n1)/bin/python3.12" \
        "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PY312="$(find_python312)"; then
    echo "SKIPPED: no Python 3.12 interpreter found (set PYTHON312, or install one, e.g. 'pyenv install 3.12')."
    exit 0
fi
VENV="${DOSESEG_PY312_VENV:-/tmp/doseseg-py312}"
echo "Python 3.12: $PY312 -> $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY312" -m venv "$VENV"
fi
grep -vE '^\s*(#|$)|^(torch|monai)([=<>~ ]|$)' requirements.txt > "$VENV/requirements-torchless.txt"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$VENV/requirements-torchless.txt"

export PYTHONPATH="$PWD:$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
"$VENV/bin/python" - <<'PY'
import sys
import DoseSegLib
heavy = sorted(name for name in ("torch", "monai") if name in sys.modules)
if heavy:
    sys.exit(f"FAIL: import DoseSegLib imported {', '.join(heavy)}")
print(f"import DoseSegLib {DoseSegLib.__version__}: no torch, Python {sys.version.split()[0]}")
PY
"$VENV/bin/python" -m compileall -q -x '/__pycache__/' DoseSegLib DoseSeg scripts Testing > /dev/null
echo "every .py file compiles under Python 3.12"
exec "$VENV/bin/python" -m pytest Testing -q -p no:cacheprovider -p torchless_pytest -m "not slow" -rs -W "ignore:datetime.datetime.utcnow:DeprecationWarning" "$@"
