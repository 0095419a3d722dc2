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
# The JupyterLab tests (tests/lab) drive Debian's chromium (Playwright's browser download can't work
# offline) and need the side panel built from labextension/ (npm, from the registry).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with apt-get (for the JupyterLab panel tests)" >&2
  "${as_root[@]}" apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { echo "could not install ${missing[*]} (needed by the JupyterLab panel tests)" >&2; exit 1; }
fi
if [ ! -f jupyter_cake/labextension/static/style.js ] || [ -n "$(find labextension/src labextension/style labextension/package.json -newer jupyter_cake/labextension/package.json 2>/dev/null | head -1)" ]; then
  echo "building the JupyterLab extension (labextension/ -> jupyter_cake/labextension)" >&2
  start=$(date +%s)
  (cd labextension && PATH="$PWD/../.venv/bin:$PATH" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } &&
    PATH="$PWD/../.venv/bin:$PATH" npm run build:prod) >/tmp/cake-labextension-build.log 2>&1 ||
    { echo "the labextension build failed; see /tmp/cake-labextension-build.log" >&2; exit 1; }
  echo "labextension built in $(( $(date +%s) - start )) s" >&2
fi
"${as_root[@]}" tests/infra/slurm-up.sh || { echo "could not start the local Slurm cluster (tests/infra/slurm-up.sh)" >&2; exit 1; }
# tests/sky: SkyPilot in its own venv (.venv-sky; its pins clash with the test venv), then, on the Slurm
# cluster just started, a login user, offline shims and catalogs for it (tests/infra/sky-up.sh).
tests/infra/sky-venv.sh || { echo "could not install SkyPilot into .venv-sky (tests/infra/sky-venv.sh)" >&2; exit 1; }
"${as_root[@]}" tests/infra/sky-up.sh || { echo "could not prepare SkyPilot on the local Slurm cluster (tests/infra/sky-up.sh)" >&2; exit 1; }
# A real single-node Kubernetes (built once per machine into /var/cache/cake-k8s, ~5 min; then ~20 s to start).
"${as_root[@]}" tests/infra/k8s-build.sh >/tmp/cake-k8s-build.log 2>&1 ||
  { echo "could not build the local Kubernetes (tests/infra/k8s-build.sh); the end of /tmp/cake-k8s-build.log:" >&2; tail -n 40 /tmp/cake-k8s-build.log >&2; "${as_root[@]}" tests/infra/slurm-down.sh >/dev/null; exit 1; }
"${as_root[@]}" tests/infra/k8s-up.sh ||
  { echo "could not start the local Kubernetes (tests/infra/k8s-up.sh)" >&2; "${as_root[@]}" tests/infra/k8s-down.sh >/dev/null; "${as_root[@]}" tests/infra/slurm-down.sh >/dev/null; exit 1; }
.venv/bin/python -m pytest "$@"
status=$?
"${as_root[@]}" tests/infra/slurm-down.sh >/dev/null
"${as_root[@]}" tests/infra/k8s-down.sh >/dev/null
exit $status
