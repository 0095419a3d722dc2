#!/usr/bin/env bash
# `make test`: bring up the real components the tests need (a local Slurm cluster with a login node
# over SSH), run pytest, and stop exactly what was started, keeping pytest's exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
as_root=()
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then as_root=(sudo -n); else
    echo "make test needs root (or passwordless sudo) to start the local Slurm cluster the tests use." >&2
    exit 1
  fi
fi
"${as_root[@]}" tests/infra/slurm-up.sh || { echo "could not start the local Slurm cluster (tests/infra/slurm-up.sh)" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
status=$?
"${as_root[@]}" tests/infra/slurm-down.sh >/dev/null
exit $status
