#!/usr/bin/env bash
# Create .venv with a Python >= 3.10 found on this machine, and install the project with the given extras.
# Usage: tools/ensure-venv.sh EXTRAS   (e.g. "demo" or "test,demo")
# Why a script: Debian/Ubuntu ship python3 without the venv module (package python3-venv); as root we
# install it, otherwise we say exactly what to install.
set -euo pipefail
extras="${1:-}"
venv=".venv"
stamp="$venv/.installed-${extras//,/-}"

pick_python() {
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Cake needs Python 3.10 or newer; install it (e.g. apt-get install python3) and retry." >&2
  return 1
}

if [ ! -x "$venv/bin/python" ]; then
  python=$(pick_python)
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "python's venv module is missing; installing python${version}-venv with apt-get" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${version}-venv" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "error: python's venv module is missing. Install it: sudo apt-get install python${version}-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip
fi

if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  spec="."
  [ -n "$extras" ] && spec=".[${extras}]"
  "$venv/bin/python" -m pip install -q -e "$spec"
  touch "$stamp"
fi
