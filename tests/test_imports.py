"""Importing jupyter_cake and loading the magics stays light: no SkyPilot, Kubernetes or Ray."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sky", "kubernetes", "ray", "pandas", "matplotlib", "numpy")


def test_import_and_load_ext_do_not_pull_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "before = set(sys.modules)\n"  # IPython's test shell itself may import matplotlib
        "ip.run_line_magic('load_ext', 'jupyter_cake')\n"
        "import jupyter_cake.targets, jupyter_cake.cli\n"
        f"print(sorted(m for m in {HEAVY!r} if m in set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_backend_entry_point_is_registered() -> None:
    from jupyter_cake.backends import available_backends, get_backend

    assert "local" in available_backends()
    assert get_backend("local").name == "local"
