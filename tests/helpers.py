"""Helpers shared by test modules in every folder: live notebooks through nbclient, process checks,
the `cake` command line, and the golden files of generated sbatch scripts.

(Kept out of conftest.py so that test folders with a conftest.py of their own can import them.)
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from nbclient import NotebookClient

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for what runs inside (kernels started then inherit them); restore after."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def nanny_pids(data_dir: Path) -> set[int]:
    """Nanny processes started under this test store (what 'nothing left running' checks)."""
    wanted = ["-m", "jupyter_cake.nanny", "--session-dir"]
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or it just exited
            continue
        if argv[1:4] == wanted and argv[4].startswith(str(data_dir)):
            pids.add(int(proc.name))
    return pids


@functools.cache
def shared_store() -> Any:
    """One Store (one SQLite connection per thread) for a test process's own looks at the store. Opening
    a second Store in a process that has one open closes a descriptor of the database file (Store makes
    the file 0600 first), and POSIX drops the process's SQLite locks with it: concurrent writers then
    corrupt the database (https://www.sqlite.org/howtocorrupt.html, 2.2)."""
    from jupyter_cake.store import Store

    return Store()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """The files under ``root`` whose bytes contain ``needle``, read by a child process. Reading the store's
    database (or its -wal/-shm) here would open and close a descriptor of it in this process, and POSIX
    drops every SQLite lock the process holds with it: concurrent writers then corrupt the database
    (https://www.sqlite.org/howtocorrupt.html, 2.2). A child holds no SQLite locks, so its reads are safe."""
    scan = (
        "import sys; from pathlib import Path\n"
        "needle = bytes.fromhex(sys.argv[2])\n"
        "for p in sorted(Path(sys.argv[1]).rglob('*')):\n"
        "    if p.is_file() and not p.is_symlink() and needle in p.read_bytes(): print(p)\n"
    )
    found = subprocess.run([sys.executable, "-c", scan, str(root), needle.hex()], capture_output=True, text=True,
                           timeout=60, check=True)  # fmt: skip
    return [Path(line) for line in found.stdout.splitlines()]


def kill_starting(name: str, started: Callable[[Any], bool], *args: str, cwd: Path, env: dict[str, str] | None = None,
                  timeout: float = 90) -> Any:
    """`cake run` of a one-line script on a new session `name` (more `cake run` options in `args`), killed with
    SIGKILL (its whole process group, as when a terminal goes away) as soon as `started(row)` says so of the
    session's store row, polled while it starts; returns that row as it was when the starter died."""
    store = shared_store()  # made before the starter can be creating the database file
    script = cwd / "hello.py"
    script.write_text("print('hello')\n")
    argv = [sys.executable, "-m", "jupyter_cake.cli", "run", str(script), "--name", name, "--new", *args]
    proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            rows = [r for r in store.find_session(name) if r.name == name and r.state == "starting"]
            if rows and started(rows[0]):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return rows[0]
            time.sleep(0.02)
        output = proc.stdout.read().decode(errors="replace") if proc.poll() is not None and proc.stdout else ""
        raise AssertionError(f"session {name} never reached the moment to kill its start: {output[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def kernel_from_spec(name: str, ready_timeout: float = 120) -> Iterator[Any]:
    """A kernel started from kernelspec ``name`` as PyCharm and JupyterLab start one (jupyter_client): its
    client, once the kernel answers; shut down as a frontend does when the block ends."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=ready_timeout)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


@contextlib.contextmanager
def background(work: Callable[[], object]) -> Iterator[None]:
    """Run ``work`` in a thread while the body runs (a fault injected under a running cell); joined after."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


class Recorder(NotebookClient):
    """nbclient that also keeps every iopub message with the local time it arrived."""

    received: list[tuple[float, dict[str, Any]]]

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.received.append((time.time(), msg))
        return super().process_message(msg, cell, cell_index)


@dataclass
class Notebook:
    """A live notebook: cells run one by one in the same kernel, like a user clicking Run."""

    client: Recorder
    nb: Any
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def run(self, source: str, timeout: float = 120) -> Any:
        """Execute one cell; return it (outputs applied as a frontend would). Raises on cell error."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.received = []
        self.client.timeout = timeout
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def fails(self, source: str, timeout: float = 120) -> str:
        """Execute a cell that must fail; return the error text nbclient reports."""
        from nbclient.exceptions import CellExecutionError

        with pytest.raises(CellExecutionError) as info:
            self.run(source, timeout)
        return str(info.value)

    def fails_with(self, source: str, *fragments: str, within: float | None = None) -> str:
        """Execute a cell that must fail (in less than `within` seconds, when given) with every fragment
        in its error text; return that text for further checks."""
        t0 = time.time()
        error = self.fails(source)
        if within is not None:
            assert time.time() - t0 < within
        for fragment in fragments:
            assert fragment in error, f"{fragment!r} not in: {error[-800:]}"
        return error

    @property
    def kernel_pid(self) -> int:
        return int(self.client.km.provisioner.process.pid)

    def interrupt(self) -> None:
        os.kill(self.kernel_pid, signal.SIGINT)  # what the notebook's stop button does for ipykernel

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # the kernel goes, whether the test passed or not


def text(cell: Any, name: str = "stdout") -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == name)


def open_notebook(cwd: Path | None = None) -> Notebook:
    nb = nbformat.v4.new_notebook()
    client = Recorder(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd or ROOT)}})
    client.received = []
    notebook = Notebook(client, nb)
    notebook.stack.enter_context(client.setup_kernel())
    notebook.run("%load_ext jupyter_cake")
    return notebook


@contextlib.contextmanager
def local_session(name: str, **env: str) -> Iterator[Notebook]:
    """A notebook kernel (started with `env` set, which it and its sessions inherit) with a `local` Cake
    session called `name`, as a module's tests share it; after them the session goes down and the kernel with it."""
    with environment(**env):
        nb = open_notebook()
    with nb:
        try:
            nb.run(f"%cake use local --name {name}")
            yield nb
        finally:
            with contextlib.suppress(Exception):  # a test may have taken the session down already
                nb.run("%cake down")


def cake_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `cake` command line, as a user types it next to the notebook (it shares the test store). Not checked:
    tests look at its exit status too."""
    argv = [sys.executable, "-m", "jupyter_cake.cli", *args]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)


def assert_behaves_like_local(nb: Notebook, interrupt_slack: float) -> None:
    """What a remote session must do as a local one does, after a cell there imported `time`: inline plots,
    a plain error, the stop button (within `interrupt_slack` s of the click), and --push/--pull of 20 MB."""
    cell = nb.run("%%cake\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)

    error = nb.fails("%%cake\n{}['missing']")
    assert "KeyError" in error and "missing" in error

    timer = threading.Timer(1.5, nb.interrupt)
    timer.start()
    t0 = time.time()
    assert "KeyboardInterrupt" in nb.fails("%%cake\ntime.sleep(60)")
    assert time.time() - t0 - 1.5 < interrupt_slack

    nb.run("import numpy as np\nblob = np.arange(2_500_000, dtype=np.float64)")  # 20 MB each way
    nb.run("%%cake --push blob --pull doubled\ndoubled = blob * 2")
    assert text(nb.run("print(bool((doubled == blob * 2).all()))")) == "True\n"


def sbatch_script(spec_text: str, **named: object) -> str:
    """The sbatch script Cake writes for a target line, or (given `named`) for the named target `t` with those
    fields; session id, idle timeout, nanny archive and its digest are fixed so that the script is too."""
    # Imported here: every test folder imports this module, most of them never render a script.
    from jupyter_cake.backends.slurm.script import job_spec, render
    from jupyter_cake.targets import parse_target

    target = parse_target(spec_text, {"t": named} if named else None)
    return render(job_spec(target, "s-0123abcd", 30.0), "QVJDSElWRQ==", "feedbeef0000")


def assert_matches_golden(generated: str, golden: Path) -> None:
    """`generated` is exactly the golden file; with UPDATE_GOLDEN=1 in the environment it first becomes it."""
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(generated)
    assert generated == golden.read_text()


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
