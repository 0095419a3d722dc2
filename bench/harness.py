"""Small helpers for bench/run.py: statistics, the stdout stamp writer, cleanup, the results table.

Nothing here knows about jupyter_cake, ipyparallel or jupyter_client; the drivers live in systems.py.
"""

from __future__ import annotations

import io
import math
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# -- statistics ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (same as numpy's default), without needing numpy."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Result:
    """One row of the table: the samples one system produced for one benchmark.

    ``samples`` are seconds (durations or latencies). For transfers, ``nbytes`` is set and the table
    shows throughput: nbytes / median time (and nbytes / p90 time: the slow end)."""

    key: str  # e.g. "rtt", "lat_unflushed", "push_100MB", "cold"
    bench: str  # human label of the benchmark
    system: str  # human label of the system
    samples: list[float] = field(default_factory=list)
    nbytes: int | None = None
    error: str | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    @property
    def gbps(self) -> float:
        """GB/s (1 GB = 1e9 bytes) at the median time."""
        return self.nbytes / self.median / 1e9 if self.nbytes and self.samples else math.nan

    @property
    def gbps_p90(self) -> float:
        return self.nbytes / self.p90 / 1e9 if self.nbytes and self.samples else math.nan

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "bench": self.bench,
            "system": self.system,
            "n": len(self.samples),
            "samples_s": self.samples,
            "median_s": None if not self.samples else self.median,
            "p90_s": None if not self.samples else self.p90,
            "error": self.error,
            "note": self.note,
        }
        if self.nbytes:
            out["nbytes"] = self.nbytes
            out["gbps_median"] = None if not self.samples else self.gbps
            out["gbps_p90"] = None if not self.samples else self.gbps_p90
        return out


def fmt_seconds(s: float) -> str:
    if s is None or math.isnan(s):
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_value(r: Result, which: str) -> str:
    if r.error and not r.samples:
        return "—"
    t = r.median if which == "median" else r.p90
    if r.nbytes:
        rate = r.gbps if which == "median" else r.gbps_p90
        return f"{rate:.2f} GB/s ({fmt_seconds(t)})"
    return fmt_seconds(t)


# -- the stdout stamp writer -------------------------------------------------------------------------

MARK_RE = re.compile(r"@@T([0-9.eE+-]+)@@")


class StampWriter(io.TextIOBase):
    """Stands in for ``sys.stdout`` for the whole benchmark.

    Normally it swallows everything (the ``[cake] started session ...`` chatter). While *armed* it
    records ``time.time()`` of the first write that contains the marker ``@@T`` and keeps the text,
    so the caller can parse the remote timestamp out of it afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.armed = False
        self.stamp: float | None = None
        self.text: list[str] = []

    def arm(self) -> None:
        with self._lock:
            self.armed, self.stamp, self.text = True, None, []

    def disarm(self) -> tuple[float | None, str]:
        with self._lock:
            self.armed = False
            return self.stamp, "".join(self.text)

    def first_output(self, run_cell: Callable[[], object]) -> float:
        """Armed around ``run_cell`` (a cell printing the marker): ``time.time()`` when its output
        reached this process's stdout."""
        self.arm()
        try:
            run_cell()
        finally:
            arrived, text = self.disarm()
        if arrived is None:
            raise RuntimeError(f"the first cell's output never reached stdout (got {text[:80]!r})")
        return arrived

    def write(self, s: str) -> int:  # type: ignore[override]
        now = time.time()
        if self.armed:
            with self._lock:
                if self.stamp is None and "@@T" in s:
                    self.stamp = now
                self.text.append(s)
        return len(s)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def remote_stamp(text: str) -> float | None:
    m = MARK_RE.search(text)
    return float(m.group(1)) if m else None


# -- cleanup -----------------------------------------------------------------------------------------


class Cleanup:
    """LIFO list of teardown callables; each runs once, failures are reported and don't stop the rest."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._items: list[tuple[str, Callable[[], Any]]] = []
        self._log = log

    def push(self, label: str, fn: Callable[[], Any]) -> Callable[[], None]:
        entry = (label, fn)
        self._items.append(entry)

        def run_now() -> None:
            if entry in self._items:
                self._items.remove(entry)
                self._run(entry)

        return run_now

    def _run(self, entry: tuple[str, Callable[[], Any]]) -> None:
        label, fn = entry
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - keep cleaning up whatever happens
            self._log(f"cleanup {label!r} failed: {type(exc).__name__}: {exc}")

    def run_all(self) -> None:
        while self._items:
            self._run(self._items.pop())


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def log_exception(log: Callable[[str], None], what: str, exc: BaseException) -> None:
    log(f"ERROR in {what}: {short_error(exc)}")
    for line in traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]:
        for sub in line.rstrip().splitlines():
            log("    " + sub)


def stderr_log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.__stderr__, flush=True)


# -- letting the machine settle ------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def quiesce(max_s: float = 2.0, window_s: float = 0.05, busy_below: float = 0.15) -> float:
    """Wait (untimed) until the machine is mostly idle, at most ``max_s``; returns seconds waited.

    Used between heavy operations so background work one system leaves behind (ipyparallel's hub
    digesting a 1 GB result, a kernel freeing memory) does not land in the next system's timing."""
    start = time.monotonic()
    prev = _cpu_times()
    if prev is None:
        time.sleep(min(max_s, 0.2))
        return time.monotonic() - start
    while time.monotonic() - start < max_s:
        time.sleep(window_s)
        cur = _cpu_times()
        assert cur is not None
        busy, total = cur[0] - prev[0], cur[1] - prev[1]
        prev = cur
        if total > 0 and busy / total < busy_below:
            break
    return time.monotonic() - start
