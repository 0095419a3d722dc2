"""python-lsp-server plugin: "Run cell on <target>" for ``# %%`` cells, in any editor that speaks LSP.

Registered under the entry point group ``pylsp`` as ``cake``; pylsp loads it at start. (pylsp logs a
plugin that fails to import only at INFO, so the test suite checks that this one loads.)

- code lenses: "▶ Run cell on <target>" over every ``# %%`` cell (the percent format VS Code, PyCharm,
  Spyder and Jupytext share) and "▶ Run file on <target>" on the first line;
- code actions at the cursor: run the cell there, the selection, or the file;
- ``workspace/executeCommand`` runs the code through the session engine (``Cake``). It returns a callable,
  so pylsp runs it on its worker pool and a long run never blocks completions or diagnostics. Output is
  reported while it arrives as ``window/logMessage`` (the editor's language-server output panel) and as
  ``$/progress`` (the status bar); the command's result carries the run id, status, output and, on failure, the reason.

The cells of one workspace share a session per target, so variables persist from cell to cell as in a
notebook, and across editor restarts (the session is re-attached, until it idles out).

Settings (``pylsp.plugins.cake.*``): ``enabled`` (default true), ``target`` (a target line, default
``local``, e.g. ``"slurm/hpc/gpu --gpus A100:1"`` or a named target), ``session`` (session name; default:
the target's).
"""

from __future__ import annotations

import queue
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pylsp import hookimpl

if TYPE_CHECKING:
    from jupyter_cake.manager import Cake, Handle

RUN_CELL = "cake.runCell"
RUN_FILE = "cake.runFile"
RUN_RANGE = "cake.runRange"
COMMANDS = (RUN_CELL, RUN_FILE, RUN_RANGE)
DEFAULT_TARGET = "local"
CELL_MARKER = re.compile(r"^\s*#\s*%%")
MARKDOWN_CELL = re.compile(r"^\s*#\s*%%\s*\[(markdown|md)\]", re.IGNORECASE)
LOG_INFO = 3  # LSP MessageType
LOG_WARNING = 2
LOG_ERROR = 1
LIVENESS_CHECK_S = 2.0
MAX_RESULT_OUTPUT = 100_000  # characters of output kept in the command's result


@dataclass
class Cell:
    start: int  # line of the `# %%` marker
    end: int  # last line (inclusive)
    code: str


def find_cells(source: str) -> list[Cell]:
    """Code cells of a percent-format file. Text above the first marker is not a cell (as in VS Code)."""
    lines = source.splitlines()
    markers = [i for i, line in enumerate(lines) if CELL_MARKER.match(line)]
    cells = []
    for n, start in enumerate(markers):
        end = (markers[n + 1] - 1) if n + 1 < len(markers) else len(lines) - 1
        if MARKDOWN_CELL.match(lines[start]):
            continue
        cells.append(Cell(start, end, "\n".join(lines[start + 1 : end + 1])))
    return cells


def cell_at(source: str, line: int) -> Cell | None:
    for cell in find_cells(source):
        if cell.start <= line <= cell.end:
            return cell
    return None


def _settings(config: Any, document_path: str | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = config.plugin_settings("cake", document_path=document_path) or {}
    return settings


def _target_line(settings: dict[str, Any]) -> str:
    return str(settings.get("target") or DEFAULT_TARGET).strip()


def _command(title: str, command: str, arguments: list[Any]) -> dict[str, Any]:
    return {"title": title, "command": command, "arguments": arguments}


# -- hooks --------------------------------------------------------------------------------------------
@hookimpl
def pylsp_settings(config: Any) -> dict[str, Any]:
    return {"plugins": {"cake": {"enabled": True, "target": DEFAULT_TARGET, "session": None}}}


@hookimpl
def pylsp_commands(config: Any, workspace: Any) -> list[str]:
    return list(COMMANDS)


@hookimpl
def pylsp_code_lens(config: Any, workspace: Any, document: Any) -> list[dict[str, Any]]:
    target = _target_line(_settings(config, document.path))
    lenses = []
    for cell in find_cells(document.source):
        line_range = {"start": {"line": cell.start, "character": 0}, "end": {"line": cell.start, "character": 0}}
        lenses.append({"range": line_range, "command": _command(f"▶ Run cell on {target}", RUN_CELL, [document.uri, cell.start])})
    if document.source.strip():
        top = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}
        lenses.append({"range": top, "command": _command(f"▶ Run file on {target}", RUN_FILE, [document.uri])})
    return lenses


@hookimpl
def pylsp_code_actions(config: Any, workspace: Any, document: Any, range: dict[str, Any], context: Any) -> list[dict[str, Any]]:  # noqa: A002 - pylsp's name
    target = _target_line(_settings(config, document.path))
    actions = []
    start, end = range["start"], range["end"]
    if (start["line"], start["character"]) != (end["line"], end["character"]):
        title = f"Run selection on {target}"
        actions.append({"title": title, "kind": "source", "command": _command(title, RUN_RANGE, [document.uri, range])})
    cell = cell_at(document.source, start["line"])
    if cell is not None:
        title = f"Run cell on {target}"
        actions.append({"title": title, "kind": "source", "command": _command(title, RUN_CELL, [document.uri, cell.start])})
    if document.source.strip():
        title = f"Run file on {target}"
        actions.append({"title": title, "kind": "source", "command": _command(title, RUN_FILE, [document.uri])})
    return actions


@hookimpl
def pylsp_execute_command(config: Any, workspace: Any, command: str, arguments: list[Any]) -> Callable[[], dict[str, Any]] | None:
    if command not in COMMANDS:
        return None  # another plugin's command
    uri = arguments[0] if arguments else None
    if not isinstance(uri, str):
        workspace.show_message(f"{command} needs a document URI as its first argument.", LOG_ERROR)
        return None
    document = workspace.get_maybe_document(uri) or workspace.get_document(uri)
    source = document.source  # read now: the run uses the text the user saw when they clicked
    if command == RUN_CELL:
        cell = cell_at(source, int(arguments[1]) if len(arguments) > 1 else 0)
        if cell is None:
            workspace.show_message("No `# %%` cell there any more; run the lens again.", LOG_WARNING)
            return None
        code, where = cell.code, f"cell at line {cell.start + 1}"
    elif command == RUN_RANGE:
        code, where = _text_in_range(source, arguments[1]), "selection"
    else:
        code, where = source, "file"
    settings = _settings(config, document.path)
    title = f"{where} of {document.path.rsplit('/', 1)[-1]}"
    request = RunRequest(code, title, f"{document.path}:{where}", _target_line(settings), settings.get("session"),
                         workspace.root_path or "")  # fmt: skip
    return lambda: _execute(workspace, request)


@hookimpl
def pylsp_shutdown(config: Any, workspace: Any) -> None:
    """Disconnect; sessions keep running (re-attached next time, or stopped by their idle timeout)."""
    for handle in list(_handles.values()):
        handle.close()
    _handles.clear()


def _text_in_range(source: str, rng: dict[str, Any]) -> str:
    lines = source.splitlines(keepends=True)
    start, end = rng["start"], rng["end"]
    if start["line"] == end["line"]:
        return lines[start["line"]][start["character"] : end["character"]] if start["line"] < len(lines) else ""
    parts = [lines[start["line"]][start["character"] :], *lines[start["line"] + 1 : end["line"]]]
    if end["line"] < len(lines):
        parts.append(lines[end["line"]][: end["character"]])
    return "".join(parts)


# -- running ------------------------------------------------------------------------------------------
@dataclass
class RunRequest:
    code: str
    title: str
    source: str
    target: str
    session: str | None
    root: str


_lock = threading.Lock()
_cake: Cake | None = None
_handles: dict[tuple[str, str, str | None], Handle] = {}


def _session(request: RunRequest, report: Callable[[str], None]) -> Handle:
    """The workspace's session for this target: the one it used before if it is alive, else a new one."""
    from jupyter_cake.errors import SessionGone
    from jupyter_cake.manager import Cake
    from jupyter_cake.targets import resolve_target

    global _cake  # noqa: PLW0603 - one engine per language server
    key = (request.root, request.target, request.session)
    with _lock:  # two cells clicked at once must not start two sessions
        if _cake is None:
            _cake = Cake()
        handle = _handles.get(key)
        if handle is not None:
            try:
                handle.ensure_alive()
                return handle
            except SessionGone as exc:
                _handles.pop(key, None)
                report(f"{exc} Starting a new session.")
        target = resolve_target(shlex.split(request.target))
        handle, started = _cake.use(target, name=request.session, owner=f"lsp:{request.root}",
                                    progress=lambda text, transient=False: report(text))  # fmt: skip
        if started:
            report(f"started session {handle.id} on {target.describe()}")
        _handles[key] = handle
        return handle


def _execute(workspace: Any, request: RunRequest) -> dict[str, Any]:
    """Runs on pylsp's worker pool."""
    from jupyter_cake.errors import CakeError, SessionGone

    def log(text: str, kind: int = LOG_INFO) -> None:
        workspace.log_message(text, kind)

    with workspace.report_progress(f"Cake: {request.title} on {request.target}") as progress:

        def report(text: str) -> None:
            log(f"[cake] {text}")
            progress(text)

        try:
            handle = _session(request, report)
            outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
            run_id, future = handle.start_run(request.code, outputs.put, source=request.source)
            progress(f"run {run_id} on session {handle.id}")
            text, error = _follow(handle, future, outputs, log, progress)
            outcome = future.result()
            handle.finish_run(outcome)
        except CakeError as exc:  # includes SessionGone
            workspace.show_message(f"Cake: {exc}", LOG_ERROR)
            log(f"[cake] {exc}", LOG_ERROR)
            return {"status": "error", "reason": str(exc), "session_gone": isinstance(exc, SessionGone)}
    error = error or outcome.error
    # Never a top-level "error" or "result" key: pylsp-jsonrpc would take the dict for a whole response.
    result: dict[str, Any] = {"run": run_id, "session": handle.id, "status": outcome.status, "output": text[-MAX_RESULT_OUTPUT:]}
    if error:
        summary = f"{error.get('ename')}: {error.get('evalue')}"
        result["reason"] = summary
        workspace.show_message(f"Cake: the {request.title} failed on {request.target}: {summary}", LOG_WARNING)
    return result


def _follow(
    handle: Handle, future: Any, outputs: queue.SimpleQueue[Any], log: Callable[..., None], progress: Callable[[str], None]
) -> tuple[str, dict[str, Any] | None]:
    """Relay outputs to the client as they arrive; return (all text, error content)."""
    from jupyter_cake.relay import journal_text

    chunks: list[str] = []
    error: dict[str, Any] | None = None
    last_check = time.monotonic()
    while True:
        try:
            output = outputs.get(timeout=0.05)
        except queue.Empty:
            if future.done():
                break
            handle.check_probe()  # raises SessionGone if the session ended under the run
            if time.monotonic() - last_check > LIVENESS_CHECK_S:
                last_check = time.monotonic()
                handle.probe()
            continue
        if output["msg_type"] == "error":
            error = output["content"]
        text = journal_text([output])
        if text:
            chunks.append(text)
            log(text.rstrip("\n"), LOG_ERROR if output["msg_type"] == "error" else LOG_INFO)
            last_line = text.rstrip("\n").rsplit("\n", 1)[-1]
            if last_line:
                progress(last_line[:200])
    while True:
        try:
            output = outputs.get_nowait()
        except queue.Empty:
            break
        text = journal_text([output])
        if output["msg_type"] == "error":
            error = output["content"]
        if text:
            chunks.append(text)
            log(text.rstrip("\n"))
    return "".join(chunks), error
