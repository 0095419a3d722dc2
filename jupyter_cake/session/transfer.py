"""Moving variables between the local and the remote namespace: ``push`` and ``pull``, each one comm
(``VARS_COMM_TARGET``) opened on the shell channel and answered on iopub by the handler that the
nanny's kernel launcher (``jupyter_cake.nanny.kernel``) registers in the kernel.

Values travel as cloudpickle frames with their buffers out of band, as Jupyter message buffers (zero-copy
for arrays): callers pickle with ``dumps_frames`` from that module; ``pull`` unpickles with its
``loads_frames``. The comm protocol is the only thing this shares with runs, through ``Wire``'s routing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.session.connection import Connection


class Transfer(Connection):
    """``push`` / ``pull`` of variables, one comm request each."""

    async def _vars_request(self, data: dict[str, Any], buffers: Sequence[Any], timeout: float | None) -> dict[str, Any]:
        from jupyter_cake.nanny.kernel import VARS_COMM_TARGET

        comm_id = uuid.uuid4().hex
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._comms[comm_id] = waiter
        self._own_comms.add(comm_id)  # its comm_close is not a widget's
        self._send(
            self.shell,
            "comm_open",
            {"comm_id": comm_id, "target_name": VARS_COMM_TARGET, "data": data},
            buffers=buffers,
        )
        try:
            reply = await asyncio.wait_for(waiter, timeout)
        finally:
            self._comms.pop(comm_id, None)
        result: dict[str, Any] = reply["content"]["data"]
        if not result.get("ok"):
            raise CakeError(f"Session {self.label}: {result.get('error')}")
        result["buffers"] = reply.get("buffers") or []
        return result

    async def push(self, frames_by_name: Mapping[str, list[Any]], timeout: float | None = None) -> None:
        """Set variables in the remote namespace; values come pickled by ``dumps_frames``."""
        names = list(frames_by_name)
        buffers = [frame for name in names for frame in frames_by_name[name]]
        counts = [len(frames_by_name[name]) for name in names]
        await self._vars_request({"op": "push", "names": names, "counts": counts}, buffers, timeout)

    async def pull(self, names: Sequence[str], timeout: float | None = None) -> dict[str, object]:
        from jupyter_cake.nanny.kernel import loads_frames

        reply = await self._vars_request({"op": "pull", "names": list(names)}, (), timeout)
        values: dict[str, object] = {}
        offset = 0
        for name, count in zip(reply["names"], reply["counts"]):
            values[name] = loads_frames(reply["buffers"][offset : offset + count])
            offset += count
        return values
