"""``cake run FILE [ARGS...] --target ...``: run a local script on a Cake session, as if it ran here.

The script runs as a **subprocess of the session's kernel**, not inside it (``runpy``):

- exit codes are the real ones: ``sys.exit(3)`` gives 3, an uncaught exception 1, a process killed by a
  signal 128+N (137 for SIGKILL, 130 for SIGINT), the shell's convention. Inside the kernel, ``os._exit``
  or a SIGKILL would take the kernel (and the session's warm state) down with the script, and
  ``SystemExit`` would be IPython's to report;
- Ctrl-C works like in a terminal: the CLI interrupts the kernel (through the nanny), the kernel's pump
  loop turns that KeyboardInterrupt into SIGINT for the script's process group, then SIGTERM and SIGKILL
  if it does not stop (every further Ctrl-C escalates one step);
- the script gets a clean interpreter: its ``sys.argv``, signal handlers, ``os.chdir`` and module state
  never leak into the session, and its own child processes are reaped with it.

The pump loop runs in the kernel's main thread, so every chunk of stdout/stderr is an ordinary stream
output of the run: streamed live to the CLI, journaled by the nanny (``cake logs -f RUN`` after
``--detach``), and in order (the other stream is flushed before a switch).

Working directory (``--sync``): ``copy`` packs the local workdir (tar.gz, minus VCS and cache dirs) and
pushes it through the session's generic variable push, which works on every backend; the kernel unpacks
it into a fresh directory and runs the script there. ``none`` runs in the remote workdir as it is. The
default ``auto`` runs in place on the ``local`` target (same machine, same files: outputs land where the
user expects them) and copies everywhere else.

The remote half (``_remote_run``) is sent as source text with each run, so a session whose jupyter_cake
is older than the CLI's still runs it; it uses only the standard library and IPython.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError, SessionGone, SessionUnreachable

# CakeScriptExit and unpack_bundle are used by the remote half: remote_cell sends them along with it.
from jupyter_cake.workdir import CakeScriptExit, pack_workdir, remote_cell, unpack_bundle

SYNC_MODES = ("auto", "copy", "none")
INTERRUPT_GRACE_S = 20.0  # SIGINT, +5 s SIGTERM, +5 s SIGKILL on the remote side: then give up waiting
POLL_S = 0.05
LIVENESS_CHECK_S = 2.0
EXIT_ERROR = "CakeScriptExit"

# Options of `cake run` itself (value-taking or not); also recognised after FILE.
RUN_VALUE_FLAGS = ("--target", "-t", "--workdir", "--name", "--sync", "--timeout")
RUN_BOOL_FLAGS = ("--detach", "--new", "--down", "--ray")
# Target resources, passed to the target parser (`--workdir` is cake run's own: the dir to sync).
RESOURCE_FLAGS = ("--infra", "--gpus", "--cpus", "--memory", "--nodes", "--image", "--env", "--idle-minutes", "--option")


@dataclass
class RunRequest:
    file: str
    script_args: list[str]
    target_tokens: list[str]
    workdir: str | None = None
    sync: str = "auto"
    detach: bool = False
    name: str | None = None
    new: bool = False
    down: bool = False
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ray: bool = False  # submit through the Ray Jobs API of the session's Ray cluster (jupyter_cake.ray.jobs)


def parse_run_args(tokens: Sequence[str]) -> RunRequest:
    """``cake run [OPTIONS] FILE [ARGS...] [OPTIONS] [-- ARGS...]``.

    Cake's options and target resources are recognised anywhere (so ``cake run train.py --gpus H100:8``
    works); every other token after FILE, and everything after ``--``, goes to the script."""
    flags: dict[str, Any] = {}
    target: list[str] = []
    resources: list[str] = []
    file: str | None = None
    script: list[str] = []
    it = iter(tokens)
    for token in it:
        if token == "--":
            if file is None:
                file = next(it, None)
            script.extend(it)
            break
        name, eq, value = token.partition("=")
        if name in RUN_VALUE_FLAGS or name in RESOURCE_FLAGS:
            if not eq:
                value = next(it, None)  # type: ignore[assignment]
                if value is None:
                    raise CakeError(f"{name} needs a value, e.g. `{name} {_EXAMPLES.get(name, 'VALUE')}`.")
            if name in RESOURCE_FLAGS:
                resources += [name, value]
            elif name in ("--target", "-t"):
                target = _split(value, name)
            else:
                flags[name[2:]] = value
        elif token in RUN_BOOL_FLAGS:
            flags[token[2:]] = True
        elif file is None:
            if token.startswith("-"):
                raise CakeError(
                    f"Unknown option {token!r} before the script. Options: {', '.join(RUN_VALUE_FLAGS + RUN_BOOL_FLAGS)}, "
                    "and target resources like --gpus A100:1. Script arguments go after the script."
                )
            file = token
        else:
            script.append(token)
    if file is None:
        raise CakeError("Which script? e.g. `cake run train.py --target local`.")
    if not target and "--infra" not in resources:
        raise CakeError(f"Where? Give a target, e.g. `cake run {shlex.quote(file)} --target local` "
                        "(or --target slurm/<cluster> --gpus A100:1, or a named target).")  # fmt: skip
    sync = flags.get("sync", "auto")
    if sync not in SYNC_MODES:
        raise CakeError(f"--sync takes one of {', '.join(SYNC_MODES)}, not {sync!r}.")
    timeout = None
    if "timeout" in flags:
        try:
            timeout = float(flags["timeout"])
        except ValueError:
            timeout = -1
        if timeout <= 0:
            raise CakeError(f"--timeout takes seconds to wait for the session to start, not {flags['timeout']!r}.")
    return RunRequest(
        file=file, script_args=script, target_tokens=[*target, *resources], workdir=flags.get("workdir"),
        sync=sync, detach=bool(flags.get("detach")), name=flags.get("name"), new=bool(flags.get("new")),
        down=bool(flags.get("down")), timeout=timeout, ray=bool(flags.get("ray")),
    )  # fmt: skip


_EXAMPLES = {"--target": "local", "-t": "local", "--workdir": ".", "--name": "train", "--sync": "copy",
             "--timeout": "600", "--gpus": "A100:1", "--cpus": "8", "--memory": "32", "--nodes": "2",
             "--image": "python:3.12", "--env": "K=V", "--idle-minutes": "30", "--option": "account=proj",
             "--infra": "k8s"}  # fmt: skip


def _split(value: str, flag: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise CakeError(f"Cannot read {flag} {value!r}: {exc}.") from None


# -- the remote half ------------------------------------------------------------------------------------
def _remote_run(spec: dict[str, Any]) -> None:  # pragma: no cover - runs inside the session's kernel
    """Runs in the session's kernel (sent as source): unpack, start the script, pump its output, forward
    interrupts, report its exit code. Standard library + IPython only."""
    import codecs
    import os
    import selectors
    import signal
    import subprocess
    import sys
    import time

    cwd = unpack_bundle(spec, "cake-run-") or spec["cwd"]  # sent beside this function (remote_cell)
    argv = list(spec["argv"])
    if spec["python"]:
        argv = [sys.executable, "-u", *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    label = spec["label"]
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    except OSError as exc:
        raise CakeScriptExit(127, f"cannot start {label}: {exc}") from None

    assert proc.stdout is not None and proc.stderr is not None
    steps = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    sent = 0  # signals sent so far
    escalate_at: float | None = None  # when to send the next one if the script is still running

    def escalate() -> None:
        nonlocal sent, escalate_at
        sig = steps[min(sent, len(steps) - 1)]
        sent += 1
        escalate_at = time.monotonic() + 5
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    outputs = {
        proc.stdout.fileno(): (sys.stdout, codecs.getincrementaldecoder("utf-8")("replace")),
        proc.stderr.fileno(): (sys.stderr, codecs.getincrementaldecoder("utf-8")("replace")),
    }
    selector = selectors.DefaultSelector()
    for fd in outputs:
        selector.register(fd, selectors.EVENT_READ)
    last = None
    exited_at = None
    while selector.get_map():
        try:
            events = selector.select(0.2)
            for key, _ in events:
                stream, decoder = outputs[key.fd]
                chunk = os.read(key.fd, 65536)
                text = decoder.decode(chunk, final=not chunk)
                if not chunk:
                    selector.unregister(key.fd)
                if text:
                    if last is not None and last is not stream:
                        last.flush()  # keeps stdout and stderr in the order the script wrote them
                    stream.write(text)
                    last = stream
            if escalate_at is not None and time.monotonic() > escalate_at and proc.poll() is None:
                escalate()
            if proc.poll() is not None and not events:
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 1.0:
                    break  # the script is gone; a background child still holds its pipes
        except KeyboardInterrupt:
            escalate()
    selector.close()
    proc.stdout.close()
    proc.stderr.close()
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            escalate()
    sys.stdout.flush()
    sys.stderr.flush()
    if rc < 0:
        name = signal.Signals(-rc).name
        raise CakeScriptExit(128 - rc, f"{label} was killed by {name} (exit code {128 - rc})")
    if rc:
        raise CakeScriptExit(rc, f"{label} exited with code {rc}")


def remote_code(spec: dict[str, Any], comment: str) -> str:
    """The cell sent to the session: the remote half, run in its own namespace so nothing leaks."""
    return remote_cell(_remote_run, spec, comment, "<cake run>")


# -- the local half -------------------------------------------------------------------------------------
class StderrProgress:
    """Session start-up progress on stderr (a backend's ``Progress``). On a terminal, transient lines
    ("Slurm job 42 is PENDING, waited 12 s") replace each other in place; where stderr is a log (an
    IDE's kernel console, CI), repeats are dropped and transient lines come at most every few seconds."""

    TRANSIENT_EVERY_S = 5.0

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.last_transient_at = 0.0
        self.open_line = False

    def __call__(self, text: str, transient: bool = False) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            sys.stderr.write(f"\r\x1b[K[cake] {text}" + ("" if transient else "\n"))
            self.open_line = transient
        else:
            now = time.monotonic()
            if transient and now - self.last_transient_at < self.TRANSIENT_EVERY_S:
                return
            self.last_transient_at = now if transient else 0.0
            sys.stderr.write(f"[cake] {text}\n")
        sys.stderr.flush()

    def end_line(self) -> None:
        if self.open_line:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open_line = False


def _stderr(text: str) -> None:
    print(f"[cake] {text}", file=sys.stderr, flush=True)


def run(request: RunRequest) -> int:
    """Run the script and return the exit code the CLI exits with."""
    from jupyter_cake import engine
    from jupyter_cake.manager import Cake
    from jupyter_cake.nanny.kernel import dumps_frames
    from jupyter_cake.targets import resolve_target

    target = resolve_target(request.target_tokens)
    if request.ray and not target.ray:
        import dataclasses

        target = dataclasses.replace(target, ray=True)
    local_script = Path(request.file).expanduser()
    workdir = Path(request.workdir).expanduser() if request.workdir else Path.cwd()
    on_this_machine = target.backend_name == "local"
    sync = request.sync if request.sync != "auto" else ("none" if on_this_machine else "copy")
    # Everything that can be checked here is checked before a session (maybe a GPU allocation) starts.
    spec: dict[str, Any] = {"cwd": None, "bundle": None, "label": local_script.name,
                            "python": local_script.suffix == ".py" or not os.access(local_script, os.X_OK)}  # fmt: skip
    bundle: bytearray | None = None
    if sync == "copy" or on_this_machine:
        script, workdir = local_script.resolve(), workdir.resolve()
        if not script.is_file():
            raise CakeError(f"{request.file}: no such file. cake run sends a script from this machine; give its path.")
        if not workdir.is_dir():
            raise CakeError(f"--workdir {request.workdir}: not a directory.")
        if sync == "copy":
            if not script.is_relative_to(workdir):
                raise CakeError(f"{request.file} is not inside the working directory {workdir}, which is what gets "
                                "synced. Run from the project directory, or pass --workdir.")  # fmt: skip
            spec["argv"] = [str(script.relative_to(workdir)), *request.script_args]
            bundle, skipped = pack_workdir(workdir)
            for link in skipped:
                _stderr(f"not synced: {link} (a link outside the working directory)")
        else:  # same machine, no copy: run in place, so outputs land where the user expects them
            spec["cwd"] = str(workdir)
            spec["argv"] = [str(script), *request.script_args]
    else:  # --sync none on another machine: the script and workdir are paths over there
        spec["cwd"] = request.workdir
        spec["argv"] = [request.file, *request.script_args]
    cake = Cake()
    progress = StderrProgress()
    try:
        handle, _ = cake.use(target, name=request.name, new=request.new, progress=progress,
                             timeout=request.timeout or None)  # fmt: skip
    except KeyboardInterrupt:  # the engine released whatever the start had allocated
        progress.end_line()
        _stderr("cancelled while the session was starting")
        return 130
    progress.end_line()
    if bundle is not None:
        spec["bundle"] = f"_cake_run_bundle_{os.getpid()}_{int(time.time() * 1000)}"
        engine.run(handle.remote.push({spec["bundle"]: dumps_frames(bundle)}))
    comment = "cake run " + shlex.join([request.file, *request.script_args])
    outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    if request.ray:  # the same run, submitted as a Ray job of the session's Ray cluster
        from jupyter_cake.ray import jobs

        code = jobs.remote_code(spec, comment)
    else:
        code = remote_code(spec, comment)
    # No allow_stdin: the script runs as a child process of the kernel, whose stdin is not the kernel's
    # stdin channel (input() in it ends at EOF, as in a batch job).
    run_id, future = handle.start_run(code, None if request.detach else outputs.put,
                                      detach=request.detach, source=comment)  # fmt: skip
    if request.detach:
        future.result()
        print(run_id)
        _stderr(f"run {run_id} detached on session {handle.id}; follow it with `cake logs -f {run_id}`")
        return 0
    try:
        return _follow(handle, run_id, future, outputs)
    finally:
        if request.down:
            cake.down(handle.row, reason="cake run --down: the run ended")


class _OutageNotes:
    """While a run's session can't be reached: a line on stderr now and then (not one per poll)."""

    EVERY_S = 5

    def __init__(self, handle: Any) -> None:
        self.handle, self.shown = handle, -1

    def note(self) -> None:
        seconds = self.handle.reconnecting
        if seconds is None:
            if self.shown >= 0:
                _stderr(f"session {self.handle.id} reachable again; the run goes on")
                self.shown = -1
        elif self.shown < 0 or int(seconds) >= self.shown + self.EVERY_S:
            self.shown = int(seconds)
            _stderr(f"session {self.handle.id} unreachable: reconnecting ({self.shown} s); it was not stopped, "
                    "Ctrl-C stops waiting")  # fmt: skip


def _follow(handle: Any, run_id: str, future: Any, outputs: queue.SimpleQueue[Any]) -> int:
    """Write outputs as they arrive; Ctrl-C (or SIGTERM, an IDE's stop button) cancels remotely."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupted_at: float | None = None
    last_check = time.monotonic()
    error: dict[str, Any] | None = None
    outage = _OutageNotes(handle)
    try:
        while True:
            try:
                item = outputs.get(timeout=POLL_S)
                error = _write(item) or error
                continue
            except queue.Empty:
                pass
            except KeyboardInterrupt:
                handle.stop_waiting_if_reconnecting()
                if interrupted_at is not None:
                    handle.interrupt()  # the remote side escalates: SIGINT, SIGTERM, SIGKILL
                    continue
                interrupted_at = time.monotonic()
                _stderr(f"interrupting run {run_id} (Ctrl-C again to escalate)")
                handle.interrupt()
                continue
            if future.done():
                break
            now = time.monotonic()
            handle.check_probe()  # reconnects a dropped channel; SessionGone if the session ended under the run
            outage.note()
            if now - last_check > LIVENESS_CHECK_S:
                last_check = now
                handle.probe()
            if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_S:
                _stderr(f"run {run_id} did not stop; it may still run on session {handle.id} (`cake down {handle.id}`)")
                return 130
        while True:
            try:
                error = _write(outputs.get_nowait()) or error
            except queue.Empty:
                break
        outcome = future.result()
    except (SessionGone, SessionUnreachable) as exc:
        _stderr(str(exc))
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    handle.finish_run(outcome)
    error = outcome.error or error
    if outcome.status == "ok":
        return 0
    if error and error.get("ename") == EXIT_ERROR:
        return int(error.get("evalue") or 1)
    if error and error.get("ename") == "KeyboardInterrupt":
        return 130
    return 1


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def _write(output: dict[str, Any]) -> dict[str, Any] | None:
    """Stream text to the terminal; the remote half's own errors (it could not unpack, say) to stderr."""
    from jupyter_cake.relay import journal_text

    kind, content = output["msg_type"], output["content"]
    if kind == "stream":
        stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
        stream.write(content.get("text", ""))
        stream.flush()
        return None
    if kind == "error":
        if content.get("ename") == EXIT_ERROR:  # one line, e.g. "train.py was killed by SIGKILL (exit code 137)"
            _stderr(" ".join(content.get("traceback") or []) or f"exit code {content.get('evalue')}")
            return dict(content)
        sys.stderr.write(journal_text([output]))
        sys.stderr.flush()
        return dict(content)
    text = journal_text([output])
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
    return None
