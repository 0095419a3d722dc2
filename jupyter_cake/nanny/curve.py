"""CurveZMQ for a session's sockets: the kernel's five and the nanny's control socket.

Loopback is no boundary on a shared login or compute node (nor on a JupyterHub host, where the channels'
forwarded ports listen): without encryption, any local user could subscribe to the kernel's iopub and
read every cell's output, since message signatures protect integrity, not confidentiality. So each
session gets a Curve key pair, made by its nanny and kept, like the message key, only in 0600 files and
in what the nanny reports through the channel. The kernel (ipykernel 7.3+) and the nanny serve with it;
every client (the engine, the IDE bridge, the Jupyter server) connects as a Curve client that must know
the session's server key, so a socket without it completes no handshake and receives nothing.

This follows the connection-file fields of Jupyter's transport-encryption proposal (``curve_publickey``,
``curve_secretkey``), which jupyter_client 8.10+ reads and uses by itself; sockets Cake makes by hand use
``serve`` and ``connect`` here. Where the kernel's environment cannot encrypt (older ipykernel, a pyzmq
without libsodium), the session runs as before and says so (``plaintext_reason``).

Shipped with the nanny: the standard library here, pyzmq only inside functions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

CURVE_KEYS = ("curve_publickey", "curve_secretkey")
MIN_IPYKERNEL = (7, 3)  # the first ipykernel that reads Curve keys from its connection file

_VERSION_PROBE = "import importlib.metadata as m; print(m.version('ipykernel'))"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _ipykernel_version(python: str) -> str:
    """The ipykernel version of ``python``'s environment, from its metadata (nothing is imported)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import importlib.metadata

        return importlib.metadata.version("ipykernel")
    probe = subprocess.run([python, "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60, check=True)
    return probe.stdout.strip()


def plaintext_reason(python: str) -> str | None:
    """Why the kernel run by ``python`` can't use CurveZMQ, or None if it can."""
    import zmq

    if not zmq.has("curve"):
        return f"pyzmq {zmq.pyzmq_version()} (libzmq {zmq.zmq_version()}) was built without CurveZMQ"
    try:
        version = _ipykernel_version(python)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return f"the kernel's ipykernel version is unknown ({exc})"
    if _release(version) < MIN_IPYKERNEL:
        wanted = ".".join(map(str, MIN_IPYKERNEL))
        return f"ipykernel {version} cannot encrypt its sockets ({wanted}+ can: pip install -U ipykernel)"
    return None


def new_keys() -> dict[str, str]:
    """A fresh server key pair, as the connection file's fields (Z85 text)."""
    import zmq

    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode("ascii"), "curve_secretkey": secret.decode("ascii")}


def encrypted(conn: dict[str, Any]) -> bool:
    return all(conn.get(key) for key in CURVE_KEYS)


def serve(sock: Any, conn: dict[str, Any]) -> None:
    """Make ``sock`` (before it binds) a Curve server with the session's keys, if it has keys."""
    if encrypted(conn):
        sock.curve_secretkey = conn["curve_secretkey"].encode("ascii")
        sock.curve_publickey = conn["curve_publickey"].encode("ascii")
        sock.curve_server = True


def connect(sock: Any, conn: dict[str, Any]) -> None:
    """Make ``sock`` (before it connects) a Curve client of the session's server key, if it has keys.
    The client's own pair is throw-away: the server authenticates nobody by key (no ZAP handler); what
    keeps strangers out is that only holders of the session's 0600 files know the server key."""
    if encrypted(conn):
        import zmq

        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = conn["curve_publickey"].encode("ascii")
        sock.curve_publickey = public
        sock.curve_secretkey = secret
