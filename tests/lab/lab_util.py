"""Helpers of the JupyterLab tests: a real `jupyter lab` server with Cake's server extension and the
prebuilt side panel, in private Jupyter dirs. (Not in conftest.py: test modules import these, and
`conftest` is an ambiguous module name when several test folders are collected.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
LABEXTENSION = ROOT / "jupyter_cake" / "labextension"
CHROMIUM = os.environ.get("CAKE_CHROMIUM", "/usr/bin/chromium")
TOKEN = "cake-lab-test-token"
ARTIFACTS = ROOT / "tests" / "lab" / "artifacts"  # screenshots (git-ignored)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    base: str
    token: str
    root: Path
    log: Path
    env: dict[str, str]

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def call(self, method: str, path: str, body: Any = None, token: bool = True, timeout: float = 120) -> tuple[int, Any]:
        """One REST call; returns (status, parsed JSON body) and never raises on HTTP errors."""
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        headers = {"Authorization": f"token {self.token}"} if token else {}
        request = urllib.request.Request(self.url(path), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text.decode(errors="replace")


def write_notebook(root: Path, name: str, cells: Sequence[str]) -> str:
    """A notebook of code ``cells`` (Python 3 kernel) at ``root / name``, for the browser to open; its name."""
    code = [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [], "execution_count": None} for c in cells]
    nb = {"cells": code, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    (root / name).write_text(json.dumps(nb))
    return name


def _private_dirs(root: Path, extension_enabled: bool) -> dict[str, str]:
    data, config, runtime, settings = (root / n for n in ("data", "config", "runtime", "settings"))
    for path in (data / "labextensions", config, runtime):
        path.mkdir(parents=True, exist_ok=True)
    if LABEXTENSION.is_dir():  # the prebuilt panel, as the wheel's shared-data installs it
        link = data / "labextensions" / "jupyter-cake"
        if not link.exists():
            link.symlink_to(LABEXTENSION, target_is_directory=True)
    # No news/update popups over the panel (they fetch from the internet).
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    server_config = {"ServerApp": {"jpserver_extensions": {"jupyter_cake.server": extension_enabled}}}
    (config / "jupyter_server_config.json").write_text(json.dumps(server_config))
    return {
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }


@contextlib.contextmanager
def lab_server(
    tmp: Path, extension_enabled: bool = True, args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
) -> Iterator[Lab]:
    """`jupyter lab` on a free port, in private dirs; stopped (and its kernels with it) afterwards. ``args``
    go on its command line after the defaults (so they override them), ``extra_env`` over the inherited environment."""
    tmp.mkdir(parents=True, exist_ok=True)
    root = tmp / "notebooks"
    root.mkdir(exist_ok=True)
    env = {**os.environ, **(extra_env or {}), **_private_dirs(tmp / "jupyter", extension_enabled)}
    port = free_port()
    log = tmp / "lab.log"
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
            "--ServerApp.disable_check_xsrf=False", *args]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    lab = Lab(f"http://127.0.0.1:{port}", TOKEN, root, log, env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if lab.call("GET", "api/status", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield lab
    finally:
        stop_process(proc, 20)
