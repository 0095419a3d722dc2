"""Kernel launcher used by the nanny: a stock ipykernel with a few Cake tweaks.

0. No history database: IPython writes every cell to a SQLite file in the home directory, which costs
   ~0.5 ms per cell and fails with "database is locked" on the NFS homes of clusters. ``In``/``Out``
   stay in memory as usual.
1. Output latency: ipykernel batches stdout/stderr and publishes every 0.2 s, so an unflushed ``print``
   reaches the notebook up to 200 ms late. A remote session is watched live, so we publish after 5 ms.
2. Variables: a comm target ``cake.vars`` moves variables in and out with cloudpickle protocol 5, large
   buffers (numpy arrays, bytes) travelling as Jupyter message buffers instead of base64 inside JSON.
3. Keys: started by the nanny, the launcher imports ipykernel first and reads its connection file only
   once the nanny says it is written (a line on stdin), so the session's Curve keys (curve.py) are made
   while the kernel boots rather than before it starts.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

from jupyter_cake.nanny.services import install_kernel_hooks

STREAM_FLUSH_INTERVAL_S = 0.005
AWAIT_CONNECTION_ENV = "CAKE_AWAIT_CONNECTION_FILE"  # set by the nanny: wait for its go on stdin
VARS_COMM_TARGET = "cake.vars"


def dumps_frames(value: object) -> list[Any]:
    """Pickle ``value`` with out-of-band buffers: [pickle stream, buffer, buffer, ...]."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def loads_frames(frames: list[Any]) -> object:
    """Inverse of dumps_frames. Writable frames (ZMQ messages received without copying) are used in
    place; read-only ones are copied once, so the user never gets an array that refuses assignment."""
    head, *rest = frames
    buffers = [b if isinstance(b, memoryview) and not b.readonly else bytearray(b) for b in rest]
    return pickle.loads(head, buffers=buffers)


def _handle_vars(comm: Any, open_msg: dict[str, Any]) -> None:
    """One request per comm: push (set names in the user namespace) or pull (send values back)."""
    from IPython import get_ipython

    ns = get_ipython().user_ns
    data = open_msg["content"]["data"]
    buffers = list(open_msg.get("buffers") or [])
    try:
        if data.get("op") == "push":
            offset = 0
            for name, count in zip(data["names"], data["counts"]):
                ns[name] = loads_frames(buffers[offset : offset + count])
                offset += count
            comm.send({"ok": True})
        elif data.get("op") == "pull":
            missing = [n for n in data["names"] if n not in ns]
            if missing:
                raise NameError(f"name {', '.join(map(repr, missing))} is not defined in the remote session")
            frames: list[Any] = []
            counts: list[int] = []
            for name in data["names"]:
                try:
                    parts = dumps_frames(ns[name])
                except Exception as exc:  # noqa: BLE001 - reported to the user as text
                    raise TypeError(f"{name!r} ({type(ns[name]).__name__}) cannot be pickled: {exc}") from exc
                counts.append(len(parts))
                frames.extend(parts)
            comm.send({"ok": True, "names": data["names"], "counts": counts}, buffers=frames)
        else:
            raise ValueError(f"unknown cake.vars op {data.get('op')!r}")
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as a message
        comm.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        comm.close()


def _await_connection_file(args: list[str], app_class: Any) -> None:
    """Wait for the nanny's go (see the module doc), then make sure this ipykernel can honour the file's
    Curve keys: one that can't would listen unencrypted while every client expects encryption."""
    if not os.environ.pop(AWAIT_CONNECTION_ENV, ""):
        return
    while os.read(0, 4096) not in (b"", b"\n"):
        pass
    path = args[args.index("-f") + 1] if "-f" in args else ""
    wants_curve = bool(path) and "curve_secretkey" in json.loads(Path(path).read_text(encoding="utf-8"))
    if wants_curve and "curve_secretkey" not in app_class.class_trait_names():
        sys.exit(f"cake kernel: {path} asks for CurveZMQ, which this ipykernel cannot do (7.3+ can)")


def main(argv: list[str] | None = None) -> None:
    from ipykernel.iostream import OutStream
    from ipykernel.kernelapp import IPKernelApp

    OutStream.flush_interval = STREAM_FLUSH_INTERVAL_S
    args = sys.argv[1:] if argv is None else argv
    _await_connection_file(args, IPKernelApp)
    app = IPKernelApp.instance()
    app.initialize(["--HistoryManager.enabled=False", *args])
    app.kernel.comm_manager.register_target(VARS_COMM_TARGET, _handle_vars)
    install_kernel_hooks(app.shell)  # what the session's services (e.g. Ray) need inside the kernel
    app.start()


if __name__ == "__main__":
    main()
