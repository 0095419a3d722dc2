"""Small helpers shared by the bench/*.py scripts: statistics, the stdout stamp writer, cleanup, the
per-run bookkeeping, the results table, and the command line / temp dir / report every script has.

Nothing here imports jupyter_cake, ipyparallel or jupyter_client; the drivers live in systems.py.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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


# A cell that prints the marker with the remote clock, flushed: its arrival is the "first output".
MARK_CELL = 'import time as _t; print(f"@@T{_t.time()!r}@@", flush=True)'


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


class BenchTimeout(Exception):
    """Raised by the --max-minutes watchdog (SIGALRM): it aborts the run, never just one row."""


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


# -- one run's bookkeeping -------------------------------------------------------------------------------


@dataclass
class RemotePlan:
    """The repetitions bench/k8s.py, sky.py and slurm.py have in common; each script's Plan adds its own."""

    cold_n: int  # cold starts per system
    rtt_n: int  # timed warm round trips per system (slurm.py: per system and phase)
    rtt_warmup: int  # untimed warm-up cells per system


class BenchBase:
    """What every benchmark driver keeps: the cleanup stack, the stdout stamp writer (run.run_guarded
    puts it in place of sys.stdout), the IPython shell, the rows by (key, system) and the errors
    listed under the table."""

    def __init__(self) -> None:
        self.cleanup = Cleanup(stderr_log)
        self.stamp = StampWriter()
        self.results: dict[tuple[str, str], Result] = {}
        self.errors: list[str] = []
        self.ip: Any = None

    def result(self, key: str, bench: str, system: str, nbytes: int | None = None) -> Result:
        """The row for (key, system), made on first use: the table lists rows in that order."""
        r = self.results.get((key, system))
        if r is None:
            r = self.results[(key, system)] = Result(key, bench, system, nbytes=nbytes)
        return r

    def working(self, key: str, bench: str, systems: Sequence[tuple[str, T]]) -> Iterator[tuple[str, T, Result]]:
        """One round over ``systems`` (name, how to run it): (name, how, its row) for each whose row has
        no error yet, so a system that failed is not tried again in later rounds."""
        for name, how in systems:
            r = self.result(key, bench, name)
            if r.error is None:
                yield name, how, r

    def fail(self, r: Result, what: str, exc: BaseException) -> None:
        """Mark row ``r`` failed and list the error; an abort (Ctrl-C, the watchdog, a signal) goes on up."""
        if isinstance(exc, (KeyboardInterrupt, BenchTimeout, SystemExit)):
            raise exc
        r.error = short_error(exc)
        self.errors.append(f"{what}: {r.error}")
        log_exception(stderr_log, what, exc)


# -- the table ---------------------------------------------------------------------------------------------

PLAIN_HEADER = ["| benchmark | system | n | median | p90 |", "|---|---|---|---|---|"]
VERDICT_HEADER = ["| Benchmark | System | n | Median | p90 | Goal / anchor | Verdict (median) |",
                  "|---|---|---:|---:|---:|---|---|"]  # fmt: skip


def plain_rows(results: Iterable[Result]) -> list[str]:
    """A table without goals (bench/k8s.py, bench/sky.py): the header, then one row per result."""
    rows = list(PLAIN_HEADER)
    for r in results:
        rows.append(f"| {r.bench} | {r.system} | {len(r.samples)} | {fmt_value(r, 'median')} | {fmt_value(r, 'p90')} |")
    return rows


def verdict_row(r: Result, first: bool, goal: str, verdict: str) -> str:
    """One row under VERDICT_HEADER; the benchmark's label only on the ``first`` row of its group, and
    an error or the row's note in the verdict column."""
    if r.error:
        verdict = f"ERROR: {r.error}" + (f" (after {len(r.samples)} samples)" if r.samples else "")
    elif r.note:
        verdict = f"{verdict}; {r.note}" if verdict else r.note
    return (f"| {r.bench if first else ''} | {r.system} | {len(r.samples)} | {fmt_value(r, 'median')} | "
            f"{fmt_value(r, 'p90')} | {goal} | {verdict} |")  # fmt: skip


# -- the command line, the temp dir, the report -----------------------------------------------------------

# (environment variable, subdirectory of the temp dir): where the systems would otherwise write into the
# user's Cake store, IPython profile (ipyparallel's connection files and logs) and Jupyter runtime dir.
ISOLATED_DIRS: tuple[tuple[str, str], ...] = (("CAKE_DATA_DIR", "cake"), ("IPYTHONDIR", "ipython"),
                                               ("JUPYTER_RUNTIME_DIR", "runtime"))  # fmt: skip


def parse_args(argv: list[str] | None, doc: str | None, *, quick: str, json_help: str = "also write raw samples here",
               keep_data: str = "keep the temporary data dir", max_minutes: float = 15.0,
               extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> argparse.Namespace:  # fmt: skip
    """The command line every bench script has: --quick, --json, --keep-data, the script's ``extra``
    options (flag, add_argument keywords), --max-minutes; with each script's own help texts."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, default=None, help=json_help)
    parser.add_argument("--keep-data", action="store_true", help=keep_data)
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--max-minutes", type=float, default=max_minutes, help="abort (and clean up) after this long")
    return parser.parse_args(argv)


def isolated_tmp(prefix: str, dirs: Sequence[tuple[str, str]] = ISOLATED_DIRS) -> Path:
    """A fresh temp dir; each (variable, subdirectory) of ``dirs`` is made and the variable pointed at
    it ("." is the temp dir itself). JPY_SESSION_NAME is dropped: Cake reuses sessions per notebook by
    it, and a benchmark run from a notebook's terminal must start its own."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    for var, sub in dirs:
        (tmp / sub).mkdir(exist_ok=True)
        os.environ[var] = str(tmp / sub)
    os.environ.pop("JPY_SESSION_NAME", None)
    return tmp


def tmp_remover(tmp: Path, keep: bool, before: Callable[[], object] | None = None) -> Callable[[], None]:
    """run_guarded's ``finish``: call ``before`` (if given), then delete ``tmp`` unless --keep-data."""

    def finish() -> None:
        if before is not None:
            before()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    return finish


def print_report(title: str, quick: bool, took: float, environment: str, table: str) -> None:
    """The report's head on stdout: title, mode and duration, the environment line, then the table."""
    print()
    print(f"**{title}** ({'quick' if quick else 'full'} run, {took:.0f} s)  ")
    print(f"Environment: {environment}")
    print()
    print(table)


def print_notes(notes: list[str], errors: list[str], aborted: str | None, *, aborted_label: str = "run aborted",
                blank: bool = True) -> None:  # fmt: skip
    """The lines under the table: notes, then errors, then why the run aborted; with ``blank``, after
    an empty line (only when there is anything to say)."""
    if blank and (notes or errors or aborted):
        print()
    for note in notes:
        print(note)
    for err in errors:
        print(f"- error: {err}")
    if aborted:
        print(f"- {aborted_label}: {aborted}")


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """--json: write ``data`` to ``path``, making its folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent))


def json_record(bench: BenchBase, env: dict[str, Any], quick: bool, took: float, aborted: str | None, table: str,
                **extra: Any) -> dict[str, Any]:  # fmt: skip
    """--json's object in bench/run.py and slurm.py: the run's facts, the script's own ``extra`` keys,
    then every row's samples and the rendered table."""
    return {"env": env, "mode": "quick" if quick else "full", "seconds": took, "aborted": aborted, "errors": bench.errors,
            **extra, "results": [r.to_json() for r in bench.results.values()], "table": table}  # fmt: skip


def end_plain_report(bench: BenchBase, notes: list[str], aborted: str | None, json_path: Path | None) -> int:
    """The end of bench/k8s.py's and sky.py's report: the notes, errors and abort under the table, the
    rows as a JSON list (--json). Returns the exit status: 1 if anything failed."""
    print_notes(notes, bench.errors, aborted, aborted_label="aborted", blank=False)
    if json_path:
        write_json(json_path, [r.to_json() for r in bench.results.values()], indent=1)
    return 1 if aborted or bench.errors else 0
