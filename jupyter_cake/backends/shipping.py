"""The nanny as a small archive that a backend ships to where the kernel runs (a Slurm job's script,
a Pod's environment), so that place needs only Python + ipykernel, never an installed Cake.

Deterministic (fixed names, sizes and modes; no timestamps), so its hash names a cache directory that
every session of one Cake version shares.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # jupyter_cake/


def nanny_archive(why: str, extra: Mapping[str, bytes] | None = None) -> tuple[str, str]:
    """(base64 tar.gz, short hash) of the nanny package plus ``extra`` files (archive path -> bytes).
    ``why`` goes into the stub ``jupyter_cake/__init__.py``, for whoever finds the unpacked folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as tar:
        _add(tar, "jupyter_cake/__init__.py", f'"""Only the nanny of Cake, {why}."""\n'.encode())
        for path in sorted((PACKAGE / "nanny").glob("*.py")):
            _add(tar, f"jupyter_cake/nanny/{path.name}", path.read_bytes())
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    data = buffer.getvalue()
    return base64.b64encode(data).decode("ascii"), hashlib.sha256(data).hexdigest()[:12]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
