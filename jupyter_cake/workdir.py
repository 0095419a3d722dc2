"""What ``cake run`` sends to a session: the local working directory packed (``--sync copy``), and
the remote half of a run as a cell.

The lowest room that needs these: the runner uses both, and the Ray layer (``cake run --ray``) sends
its own remote half the same way and tells Ray's packer to skip the same directories.
"""

from __future__ import annotations

import inspect
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError

MAX_SYNC_BYTES = 256 * 1024 * 1024
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules", ".ipynb_checkpoints",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"})  # fmt: skip
SKIP_SUFFIXES = (".pyc", ".pyo")


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked directories
        kept = sorted(d for d in dirnames if d not in SKIP_DIRS)
        dirnames[:] = [d for d in kept if not os.path.islink(os.path.join(dirpath, d))]
        links = [d for d in kept if d not in dirnames]
        for name in sorted([*filenames, *links]):
            if not name.endswith(SKIP_SUFFIXES):
                yield Path(dirpath) / name


def pack_workdir(root: Path, limit: int = MAX_SYNC_BYTES) -> tuple[bytearray, list[str]]:
    """The workdir as tar.gz bytes (a bytearray, so the push sends it as one out-of-band buffer), and
    the links left out because they point outside it (they would dangle over there)."""
    total = 0
    skipped: list[str] = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:  # speed over ratio
        for path in _files(root):
            name = str(path.relative_to(root))
            if path.is_symlink() and not (path.parent / os.readlink(path)).resolve().is_relative_to(root):
                skipped.append(f"{name} -> {os.readlink(path)}")
                continue
            try:
                info = tar.gettarinfo(str(path), arcname=name)
            except OSError:
                continue  # vanished or unreadable: the script will say if it needed it
            total += info.size
            if total > limit:
                raise CakeError(
                    f"The working directory {root} holds more than {limit // 2**20} MiB to sync. Point --workdir at the "
                    "project's code only, or keep data on the target and use --sync none."
                )
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return bytearray(buffer.getbuffer()), skipped


# -- sent with every remote half, as source: they run in the session's kernel, not here -------------------
class CakeScriptExit(Exception):  # noqa: N818 - the name users see over there, and the client's EXIT_ERROR
    """Carries the exit code (evalue) and shows one line instead of a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [str(self.args[1])]

    def __str__(self) -> str:
        return str(self.args[0])


def unpack_bundle(spec: dict[str, Any], prefix: str) -> str | None:  # pragma: no cover - runs remotely
    """Unpack the pushed working directory (``--sync copy``) into a fresh directory; None if none came."""
    import io
    import socket
    import sys
    import tarfile
    import tempfile

    from IPython import get_ipython

    if not spec.get("bundle"):
        return None
    data = get_ipython().user_ns.pop(spec["bundle"])
    cwd = tempfile.mkdtemp(prefix=prefix)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        try:
            tar.extractall(cwd, filter="data")  # refuses absolute paths, '..' and device files
        except TypeError:  # Python without tarfile filters: check the names ourselves
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in member.name.split("/") or not (member.isfile() or member.isdir()):
                    raise ValueError(f"refusing to unpack {member.name!r}") from None
            tar.extractall(cwd)
    sys.stderr.write(f"[cake] working directory synced to {socket.gethostname()}:{cwd}\n")
    return cwd


def remote_cell(function: Callable[[dict[str, Any]], None], spec: dict[str, Any], comment: str, filename: str) -> str:
    """A cell that runs ``function(spec)`` on the session from its source (so a session whose Cake is
    older than this one still runs it), in a namespace of its own so nothing leaks into the user's;
    ``CakeScriptExit`` and ``unpack_bundle`` travel with it."""
    # The future import keeps the annotations unevaluated over there (no typing imports needed).
    name = function.__name__
    prelude = "".join(inspect.getsource(part) + "\n\n" for part in (CakeScriptExit, unpack_bundle))
    source = "from __future__ import annotations\n" + prelude + inspect.getsource(function) + f"\n{name}({spec!r})\n"
    first = " ".join(comment.splitlines())
    return f"# {first}\nexec(compile({source!r}, {filename!r}, 'exec'), {{'__name__': '__cake_run__'}})\n"
