#!/usr/bin/env bash
# Create .venv with DoseSeg and every pinned dependency (idempotent).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -r requirements.txt
# pyradiomics: PyPI has only source releases, 3.1.0's metadata is broken, and
# 3.0.1 builds only with numpy and versioneer already present and no isolation.
"${PIP[@]}" versioneer==0.29 wheel setuptools
"${PIP[@]}" --no-build-isolation pyradiomics==3.0.1
"${PIP[@]}" --no-deps --no-build-isolation -e .
