"""On-disk journal of every run's iopub messages, so output can be replayed after a reconnect.

Layout under the session directory::

    journal/<run_id>.jsonl    one JSON object per iopub message whose parent is the run's execute_request,
                              numbered per run ("seq": 0, 1, 2... = its line), with the message's msg_id
    journal/runs.jsonl        one line per run state change (append-only, last line per run wins)

JSON lines keep the journal readable with ``tail -f`` and let a reader resume from a line number.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

# iopub message types that make up what a user sees of a run; anything else (comms, debug events)
# is not replayed.
JOURNALED_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "clear_output", "execute_result", "error", "execute_input"}
)


@dataclass
class RunRecord:
    run_id: str
    state: str = "running"  # running | ok | error | aborted
    started: float = field(default_factory=time.time)
    ended: float | None = None
    messages: int = 0
    error: str | None = None  # "ename: evalue" when the run raised


class Journal:
    def __init__(self, session_dir: Path) -> None:
        self.dir = session_dir / "journal"
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.runs: dict[str, RunRecord] = {}
        self._files: dict[str, IO[str]] = {}
        self._index = open(self.dir / "runs.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - lives with the nanny

    def path(self, run_id: str) -> Path:
        return self.dir / f"{safe_run_id(run_id)}.jsonl"

    def record(self, header: dict[str, Any], frames: list[bytes]) -> None:
        """Take one raw iopub message (its parsed header, and the frames after the delimiter:
        signature, header, parent, metadata, content, buffers...); journal it if it belongs to a run.

        Works on the raw JSON frames and copies ``content``/``metadata`` into the journal verbatim:
        the nanny shares the CPU with the kernel it watches, so it parses as little as it can."""
        parent = json.loads(frames[2])
        if parent.get("msg_type") != "execute_request":
            return
        run_id = parent["msg_id"]
        msg_type = header["msg_type"]
        if msg_type == "status":
            self._on_status(run_id, json.loads(frames[4]).get("execution_state"))
            return
        if msg_type not in JOURNALED_TYPES:
            return
        run = self.runs.get(run_id) or self._start(run_id)
        if msg_type == "error":
            content = json.loads(frames[4])
            run.error = f"{content.get('ename')}: {content.get('evalue')}"
        seq = run.messages  # the line this entry gets: a client that saw N entries asks from N on
        run.messages += 1
        buffers = json.dumps([base64.b64encode(b).decode("ascii") for b in frames[5:]])
        line = (
            f'{{"seq": {seq}, "msg_id": {json.dumps(header["msg_id"])}, "msg_type": "{msg_type}", '
            f'"date": {json.dumps(header.get("date"))}, "content": {frames[4].decode()}, '
            f'"metadata": {frames[3].decode() or "{}"}, "buffers": {buffers}}}\n'
        )
        handle = self._files.get(run_id) or self._open(run_id)
        handle.write(line)
        handle.flush()

    def _start(self, run_id: str) -> RunRecord:
        run = RunRecord(run_id)
        self.runs[run_id] = run
        self._write_index(run)
        return run

    def _open(self, run_id: str) -> IO[str]:
        handle = open(self.path(run_id), "a", encoding="utf-8")  # noqa: SIM115 - closed when the run ends
        self._files[run_id] = handle
        return handle

    def _on_status(self, run_id: str, state: str | None) -> None:
        if state == "busy" and run_id not in self.runs:
            self._start(run_id)
        elif state == "idle":
            run = self.runs.get(run_id) or self._start(run_id)
            if run.state == "running":
                run.state = "error" if run.error else "ok"
                if run.error and run.error.startswith("KeyboardInterrupt"):
                    run.state = "aborted"
                run.ended = time.time()
                self._write_index(run)
            handle = self._files.pop(run_id, None)
            if handle:
                handle.close()

    def _write_index(self, run: RunRecord) -> None:
        self._index.write(json.dumps(asdict(run)) + "\n")
        self._index.flush()

    def active(self) -> list[str]:
        return [r.run_id for r in self.runs.values() if r.state == "running"]

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._index.close()


def safe_run_id(run_id: str) -> str:
    """Run ids come from message ids; never let one name a path outside the journal folder."""
    cleaned = "".join(c for c in run_id if c.isalnum() or c in "-_")
    if not cleaned:
        raise ValueError(f"invalid run id {run_id!r}")
    return cleaned


def read_entries(journal_dir: Path, run_id: str, since: int = 0) -> list[dict[str, Any]]:
    """Entries of one run from line ``since`` on (also used after the nanny is gone)."""
    path = journal_dir / f"{safe_run_id(run_id)}.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    out: list[dict[str, Any]] = []
    for line in lines[since:]:
        if not line.endswith("\n"):
            break  # a line being written right now: the next read gets it whole
        out.append(json.loads(line))
    return out


def read_runs(journal_dir: Path) -> dict[str, dict[str, Any]]:
    """Latest state of every run recorded in ``runs.jsonl``."""
    path = journal_dir / "runs.jsonl"
    runs: dict[str, dict[str, Any]] = {}
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):
                    record = json.loads(line)
                    runs[record["run_id"]] = record
    return runs


def decode_buffers(entry: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(b) for b in entry.get("buffers") or []]


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
