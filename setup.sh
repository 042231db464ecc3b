#!/usr/bin/env bash
# Create .venv and install zigma-harness with its dev and ui extras at the tested versions (constraints.txt;
# CPU; ~3 minutes on a fresh machine).
# Usage: ./setup.sh            -> .venv with the project installed in editable mode
#        PYTHON=python3.12 ./setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,ui]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import zigma, plugins, harness; print('zigma-harness installed in .venv')"
