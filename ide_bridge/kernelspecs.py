"""Install, list and remove Cake kernelspecs (``cake kernel install / list / remove``).

A Cake kernelspec is an ordinary Jupyter kernelspec whose argv starts the proxy in
``ide_bridge.kernel`` with the target line and a session name baked in::

    cake kernel install slurm/hpc/gpu --gpus A100:1 --name hpc-a100

Every frontend that lists kernelspecs (VS Code, PyCharm, JupyterLab, nbclient, jupyter console) then
offers "Python 3 (Cake: slurm/hpc/gpu · A100:1)" and needs nothing else. The target line is kept as the
user typed it (a named target stays a name), so edits to ``targets.toml`` apply at the next launch.

``--env`` values (tokens, passwords) never go into the kernelspec: its argv is world-readable in
``kernel.json`` and in ``ps`` while the proxy runs. They go to a 0600 file in Cake's data dir, which the
argv names (``--env-file``) and the proxy reads at launch; the kernelspec's target shows them masked.

Kernelspecs written by earlier versions start ``jupyter_cake.ide_bridge.kernel`` (a shim for this
package's proxy). They are still Cake kernelspecs here (listed, removable), and installing one again
under its name rewrites it with the current argv.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_cake.errors import CakeError
from jupyter_cake.targets import Target, resolve_target
from jupyter_cake.targets.envmask import data_dir, mask_env_text

PROXY_MODULE = "ide_bridge.kernel"
# The proxy's module in kernelspecs written before ide_bridge became a top-level package.
LEGACY_PROXY_MODULES = ("jupyter_cake.ide_bridge.kernel",)
ON_SHUTDOWN = ("down", "keep")
# jupyter_client refuses other kernel names (its own pattern, case-insensitive).
_NAME_RE = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)
_SLUG_RE = re.compile(r"[^a-z0-9.]+")


@dataclass
class CakeKernelSpec:
    """One installed Cake kernelspec, as `cake kernel list` shows it."""

    name: str
    display_name: str
    target: str  # the target line, as given to `cake kernel install`
    on_shutdown: str
    resource_dir: str


def default_name(target: Target) -> str:
    """``cake-slurm-hpc-gpu-a100-1`` for ``slurm/hpc/gpu --gpus A100:1``: readable and stable."""
    text = target.name or target.infra
    if target.gpus is not None:
        text += f"-{target.gpus.name or 'gpu'}-{target.gpus.count}"
    return "cake-" + _SLUG_RE.sub("-", text.lower()).strip("-")


def display_name(target: Target) -> str:
    """What the frontend's kernel picker shows: the target and its GPUs, e.g.
    ``Python 3 (Cake: slurm/hpc/gpu · A100:1 · 8 CPU)``."""
    return f"Python 3 (Cake: {target.describe()})"


def kernel_argv(target_line: str, name: str, on_shutdown: str, python: str | None = None) -> list[str]:
    """The kernelspec argv. ``{connection_file}`` is filled in by the frontend at launch."""
    return [
        python or sys.executable, "-m", PROXY_MODULE, "-f", "{connection_file}",
        "--target", target_line, "--name", name, "--on-shutdown", on_shutdown,
    ]  # fmt: skip


def split_env(tokens: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """A target line's tokens without their ``--env K=V`` / ``--env=K=V`` pairs, and those pairs."""
    rest: list[str] = []
    env: dict[str, str] = {}
    items = iter(tokens)
    for token in items:
        pair = next(items, "") if token == "--env" else token[len("--env="):] if token.startswith("--env=") else None
        if pair is None:
            rest.append(token)
        else:
            key, _, value = pair.partition("=")
            env[key] = value
    return rest, env


def _save_env(name: str, env: dict[str, str]) -> Path:
    """The kernelspec's --env values in a 0600 file of Cake's data dir (0700); returns its path."""
    from jupyter_cake.store import private_dir, write_private_json

    path = private_dir(data_dir() / "kernels") / f"{name}.env.json"
    write_private_json(path, env)
    return path


def env_tokens(path: str | None, kernel_name: str | None) -> list[str]:
    """The ``--env`` tokens a kernelspec's env file holds (none without a file), for the proxy."""
    if not path:
        return []
    try:
        env = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CakeError(
            f"The --env values of kernel {kernel_name or '?'} cannot be read from {path} ({exc}). Install the "
            "kernel again with its values: `cake kernel install <target> --env NAME=value ...`."
        ) from None
    return [token for key, value in env.items() for token in ("--env", f"{key}={value}")]


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise CakeError(
            f"Kernel name {name!r} is not allowed: Jupyter kernel names use only letters, digits, '.', '_' "
            "and '-'. Pick another with --name, e.g. --name gpu-a100."
        )
    return name.lower()  # jupyter_client lower-cases names when it finds specs


def install(
    target_tokens: Sequence[str],
    name: str | None = None,
    display: str | None = None,
    *,
    user: bool = True,
    prefix: str | None = None,
    on_shutdown: str = "down",
) -> CakeKernelSpec:
    """Write a kernelspec for ``target_tokens`` (e.g. ``["local", "--cpus", "4"]``).

    Where it goes follows ``jupyter kernelspec install``: the user's data dir (``user``), or
    ``<prefix>/share/jupyter/kernels`` (``prefix``, e.g. ``sys.prefix`` for a virtualenv), else the
    system-wide directory. The target is validated now, so a typo fails here rather than in the IDE.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    from jupyter_cake.manager import preflight

    if not target_tokens:
        raise CakeError("Which target? e.g. `cake kernel install local` or `cake kernel install slurm/hpc/gpu --gpus A100:1`.")
    if on_shutdown not in ON_SHUTDOWN:
        raise CakeError(f"--on-shutdown takes one of {', '.join(ON_SHUTDOWN)}, not {on_shutdown!r}.")
    target = resolve_target(list(target_tokens))
    preflight(target)  # an IDE would only show "kernel died": say it here instead (e.g. SkyPilot missing)
    name = check_name(name or default_name(target))
    line_tokens, env = split_env(target_tokens)
    argv = kernel_argv(shlex.join(line_tokens), name, on_shutdown)
    if env:
        argv += ["--env-file", str(_save_env(name, env))]
    shown_target = mask_env_text(shlex.join(target_tokens))
    spec: dict[str, Any] = {
        "argv": argv,
        "display_name": display or display_name(target),
        "language": "python",
        # The proxy turns an interrupt_request into a remote interrupt; a signal would only reach
        # the local proxy process, which is not where the code runs.
        "interrupt_mode": "message",
        "metadata": {
            "debugger": False,
            "cake": {"target": shown_target, "on_shutdown": on_shutdown},
        },
    }
    with tempfile.TemporaryDirectory(prefix="cake-kernelspec-") as tmp:
        source = Path(tmp) / name
        source.mkdir()
        (source / "kernel.json").write_text(json.dumps(spec, indent=1, ensure_ascii=False), encoding="utf-8")
        _copy_logos(source)
        try:
            where = KernelSpecManager().install_kernel_spec(str(source), name, user=user, prefix=prefix)
        except PermissionError as exc:
            raise CakeError(
                f"Could not write the kernelspec ({exc.strerror}: {exc.filename}). Install it for your user "
                "(the default), or into this environment with --sys-prefix."
            ) from None
    return CakeKernelSpec(name, spec["display_name"], shown_target, on_shutdown, where)


def _copy_logos(dest: Path) -> None:
    """The Python logos ipykernel ships, so the kernel looks like Python in the pickers."""
    try:
        from ipykernel.kernelspec import RESOURCES
    except ImportError:  # logos are cosmetic
        return
    for logo in Path(RESOURCES).glob("logo-*"):
        shutil.copy(logo, dest / logo.name)


def _as_cake_spec(name: str, info: dict[str, Any]) -> CakeKernelSpec | None:
    spec = info.get("spec") or {}
    argv = spec.get("argv") or []
    if not any(module in argv for module in (PROXY_MODULE, *LEGACY_PROXY_MODULES)):
        return None
    cake = (spec.get("metadata") or {}).get("cake") or {}
    target = cake.get("target") or _argv_value(argv, "--target") or "?"
    on_shutdown = cake.get("on_shutdown") or _argv_value(argv, "--on-shutdown") or "down"
    return CakeKernelSpec(name, spec.get("display_name", name), target, on_shutdown, info.get("resource_dir", ""))


def _argv_value(argv: Sequence[str], flag: str) -> str | None:
    for i, token in enumerate(argv[:-1]):
        if token == flag:
            return argv[i + 1]
    return None


def list_specs() -> list[CakeKernelSpec]:
    """Cake kernelspecs visible to Jupyter from here (same search path as ``jupyter kernelspec list``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = []
    for name, info in sorted(KernelSpecManager().get_all_specs().items()):
        spec = _as_cake_spec(name, info)
        if spec is not None:
            found.append(spec)
    return found


def remove(names: Sequence[str]) -> list[CakeKernelSpec]:
    """Remove Cake kernelspecs by name; other kernelspecs are refused, not touched."""
    from jupyter_client.kernelspec import KernelSpecManager

    manager = KernelSpecManager()
    specs = manager.get_all_specs()
    removed: list[CakeKernelSpec] = []
    for raw in names:
        name = raw.lower()
        if name not in specs:
            have = ", ".join(s.name for s in list_specs()) or "none"
            raise CakeError(f"No kernelspec named {raw!r}. Cake kernelspecs here: {have} (`cake kernel list`).")
        spec = _as_cake_spec(name, specs[name])
        if spec is None:
            raise CakeError(
                f"Kernelspec {raw!r} is not a Cake kernelspec; leaving it alone. "
                f"`jupyter kernelspec remove {name}` removes other kernels."
            )
        try:
            manager.remove_kernel_spec(name)
        except PermissionError as exc:
            raise CakeError(f"Could not remove {spec.resource_dir} ({exc.strerror}). Retry with the needed rights.") from None
        env_file = _argv_value(specs[name]["spec"].get("argv") or [], "--env-file")
        if env_file:
            Path(env_file).unlink(missing_ok=True)
        removed.append(spec)
    return removed
