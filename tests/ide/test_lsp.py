"""The pylsp plugin, driven over stdio by a real LSP client (JSON-RPC with Content-Length framing)."""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from lsp_client import LspClient

from ide_bridge.lsp import COMMANDS, find_cells
from jupyter_cake.store import Store

SOURCE = """import os

# %% load
values = [1, 2, 3]
print('loaded', len(values))

# %% [markdown]
# Some prose.

# %% analyse
import math, time
for v in values:
    print('sqrt', v, round(math.sqrt(v), 3), flush=True)
    time.sleep(0.2)

# %% broken
1 / 0
"""


def test_plugin_entry_point_loads() -> None:
    # pylsp only logs a plugin that fails to import at INFO: make sure this one imports.
    [ep] = [ep for ep in entry_points(group="pylsp") if ep.name == "cake"]
    plugin = ep.load()
    assert all(hasattr(plugin, hook) for hook in ("pylsp_code_lens", "pylsp_code_actions", "pylsp_execute_command"))


def test_percent_cells() -> None:
    cells = find_cells(SOURCE)
    assert [c.start for c in cells] == [2, 9, 15]  # the markdown cell is not code; the imports above are no cell
    assert cells[0].code == "values = [1, 2, 3]\nprint('loaded', len(values))\n"


def _logs(client: LspClient) -> str:
    return "\n".join(n["params"]["message"] for n in client.notifications if n["method"] == "window/logMessage")


def test_pylsp_code_lenses_actions_and_execute_command(tmp_path: Path, ide_env: dict[str, str]) -> None:
    doc = tmp_path / "analysis.py"
    doc.write_text(SOURCE)
    uri = doc.as_uri()
    client = LspClient([sys.executable, "-m", "pylsp", "-v"], cwd=tmp_path, env=ide_env, log=tmp_path / "pylsp.log")
    try:
        init = client.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(),
                                             "capabilities": {"window": {"workDoneProgress": True}}})  # fmt: skip
        assert set(COMMANDS) <= set(init["capabilities"]["executeCommandProvider"]["commands"])  # the plugin loaded
        log = (tmp_path / "pylsp.log").read_text()  # pylsp -v: import failures would only show here, at INFO
        assert "Loaded pylsp plugin cake from" in log and "entry point 'cake'" not in log
        client.notify("initialized", {})
        client.notify("workspace/didChangeConfiguration",
                      {"settings": {"pylsp": {"plugins": {"cake": {"target": "local", "session": "lsp-test"}}}}})  # fmt: skip
        client.notify(
            "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": SOURCE}}
        )

        lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
        titles = sorted((lens["range"]["start"]["line"], lens["command"]["title"]) for lens in lenses)
        assert titles == [(0, "▶ Run file on local"), (2, "▶ Run cell on local"), (9, "▶ Run cell on local"),
                          (15, "▶ Run cell on local")]  # fmt: skip

        at_line_12 = {"start": {"line": 12, "character": 4}, "end": {"line": 12, "character": 4}}
        actions = client.request("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": at_line_12,
                                                             "context": {"diagnostics": []}})  # fmt: skip
        by_title = {a["title"]: a["command"] for a in actions}
        assert by_title["Run cell on local"]["arguments"] == [uri, 9] and "Run file on local" in by_title

        # Run a cell: output comes back as logMessage while it runs, with $/progress, and in the result.
        lens = next(lens["command"] for lens in lenses if lens["range"]["start"]["line"] == 2)
        result = client.request("workspace/executeCommand", {"command": lens["command"], "arguments": lens["arguments"]})
        assert result["status"] == "ok" and result["output"] == "loaded 3\n"
        assert any(r["method"] == "window/workDoneProgress/create" for r in client.server_requests)
        kinds = [n["params"]["value"]["kind"] for n in client.notifications if n["method"] == "$/progress"]
        assert kinds[0] == "begin" and kinds[-1] == "end"

        # A long run does not block the server: other requests are answered meanwhile, and the next cell
        # sees the previous cell's variables (one session per workspace and target).
        run = client.send_request("workspace/executeCommand", {"command": "cake.runCell", "arguments": [uri, 9]})
        time.sleep(0.3)
        asked = time.monotonic()
        client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
        assert time.monotonic() - asked < 0.5
        result = client.response(run)
        assert result["status"] == "ok" and result["output"].splitlines() == ["sqrt 1 1.0", "sqrt 2 1.414", "sqrt 3 1.732"]
        assert "sqrt 3 1.732" in _logs(client)

        # A failing cell: status error, and the editor shows a message.
        result = client.request("workspace/executeCommand", {"command": "cake.runCell", "arguments": [uri, 15]})
        assert result["status"] == "error" and result["reason"] == "ZeroDivisionError: division by zero"
        client.pump(0.2)
        shown = [n["params"]["message"] for n in client.notifications if n["method"] == "window/showMessage"]
        assert any("ZeroDivisionError" in m for m in shown)

        # Run a selection.
        selection = {"start": {"line": 3, "character": 0}, "end": {"line": 3, "character": 18}}
        result = client.request("workspace/executeCommand", {"command": "cake.runRange", "arguments": [uri, selection]})
        assert result["status"] == "ok"

        # A bad target setting is explained, not a crash.
        client.notify("workspace/didChangeConfiguration", {"settings": {"pylsp": {"plugins": {"cake": {"target": "slrum/x"}}}}})
        result = client.request("workspace/executeCommand", {"command": "cake.runCell", "arguments": [uri, 2]})
        assert result["status"] == "error" and "slrum" in result["reason"]

        # enabled: false turns the plugin off.
        settings: dict[str, Any] = {"pylsp": {"plugins": {"cake": {"enabled": False}}}}
        client.notify("workspace/didChangeConfiguration", {"settings": settings})
        assert client.request("textDocument/codeLens", {"textDocument": {"uri": uri}}) == []
    finally:
        client.close()
        from jupyter_cake.manager import Cake

        cake = Cake()
        for row in Store().sessions(live_only=True):
            if row.name == "lsp-test":
                cake.down(row)
