#!/usr/bin/env bash
# Build the images Cake's Kubernetes tests run sessions in (cached under $1/images):
#   localhost/cake-python:test       Debian bookworm minbase + python3 + ipykernel, pyzmq, cloudpickle, numpy,
#                          matplotlib (pip install --target into python3's dist-packages). Cake itself is
#                          NOT installed: the backend ships the nanny inside the Pod spec.
#   localhost/cake-python-bare:test  the same rootfs without ipykernel, to test the "image lacks ipykernel" error.
set -euo pipefail
H=${1:?cache dir}
HERE=$(cd "$(dirname "$0")" && pwd)
IMG="$H/images"; mkdir -p "$IMG"
log() { echo "[k8s-image $(date +%T)] $*"; }
[ -f "$IMG/cake-python.tar" ] && [ -f "$IMG/cake-python-bare.tar" ] && exit 0
start=$(date +%s)
ROOT="$IMG/python-rootfs"; rm -rf "$ROOT"
log "debootstrap bookworm minbase + python3"
debootstrap --variant=minbase --include=python3 bookworm "$ROOT" "$(python3 "$HERE/apt_sources.py" mirror)" >"$IMG/debootstrap.log" 2>&1 ||
  { tail -20 "$IMG/debootstrap.log" >&2; exit 1; }
# slim it: apt caches, docs and locales are never used by a session
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/{doc,man,locale}/*
python3 "$HERE/mkimage.py" "$ROOT" localhost/cake-python-bare:test "$IMG/cake-python-bare.tar" '["/usr/bin/python3"]'
log "pip install --target (ipykernel pyzmq cloudpickle numpy matplotlib)"
SITE="$ROOT/usr/lib/python3/dist-packages"
# any Python 3 with pip will do (wheels are chosen for the image's cp311, not the host's): the repo's venv
# first, since Debian's python3 ships without pip
py=""
for cand in "$HERE/../../../.venv/bin/python" python3; do
  if "$cand" -m pip --version >/dev/null 2>&1; then py=$cand; break; fi
done
[ -n "$py" ] || { echo "no Python with pip found to fill the session image" >&2; exit 1; }
"$py" -m pip install -q --disable-pip-version-check --no-compile --only-binary=:all: \
  --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --implementation cp --target "$SITE" ipykernel pyzmq cloudpickle numpy matplotlib
python3 "$HERE/mkimage.py" "$ROOT" localhost/cake-python:test "$IMG/cake-python.tar" '["/usr/bin/python3"]'
rm -rf "$ROOT"
log "session images built in $(( $(date +%s) - start )) s: $(du -sh "$IMG/cake-python.tar" | cut -f1)"
