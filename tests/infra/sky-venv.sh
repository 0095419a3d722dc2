#!/usr/bin/env bash
# Create .venv-sky: SkyPilot in its own virtual environment, for the tests and benchmarks.
# Why separate: SkyPilot pins click<8.2, bcrypt==4.0.1, uvicorn<0.36 ... which clash with the packages
# of the test venv (and of users' kernels). Cake only ever runs it out of process: the bridge
# (jupyter_cake/backends/sky/bridge.py) is started with this venv's python (CAKE_SKY_PYTHON).
# Idempotent: does nothing when the pinned version is already installed.
# Usage: tests/infra/sky-venv.sh [VENV]   (default .venv-sky in the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${1:-.venv-sky}
version=${CAKE_SKYPILOT_VERSION:-0.14.1}
stamp="$venv/.skypilot-$version"
[ -f "$stamp" ] && exit 0
python=""
for candidate in "${PYTHON:-}" python3.11 python3.12 python3.10 python3; do
  [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys, venv; sys.exit(not (3, 9) <= sys.version_info[:2] < (3, 14))' 2>/dev/null &&
    { python=$candidate; break; }
done
[ -n "$python" ] || { echo "sky-venv.sh: no Python 3.9-3.13 with the venv module found" >&2; exit 1; }
start=$(date +%s)
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
quiet() { "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }  # pip's noise about absent local indexes
quiet "$venv/bin/python" -m pip install -q --upgrade pip
quiet "$venv/bin/python" -m pip install -q "skypilot[slurm]==$version"
touch "$stamp"
echo "[sky-venv] SkyPilot $version installed in $venv in $(( $(date +%s) - start )) s"
