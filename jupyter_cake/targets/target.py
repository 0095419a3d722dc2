"""The :class:`Target` value: where code runs plus the resources it asked for.

Immutable and hashable, with the cross-field rules (what ``local`` and ``--via direct`` allow), which
backend serves it, its canonical command-line text (``canonical()`` parses back to an equal target when
it has no ``--env``), its ``to_dict``/``from_dict`` form for saved state (re-validated on load) and the
short ``describe()`` label for status tables.

``--env`` values never leave a Target in clear through these: ``canonical()`` (the default session name,
the store's ``target`` column) and ``to_dict(env_values=False)`` (the store's ``target_json``) write each
value as ``***@<keyed digest>`` (see ``envmask``); the values themselves go only where they are used
(the kernel's environment) and into the session directory's 0600 file for re-attaching.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_cake.targets.envmask import is_masked, masked_value
from jupyter_cake.targets.errors import TargetError, _field_error
from jupyter_cake.targets.fields import _FIELD_PARSERS, _as_tuples, _parse_field
from jupyter_cake.targets.infra import _parse_infra, check_host_name
from jupyter_cake.targets.pairs import _parse_mapping
from jupyter_cake.targets.resources import Gpus, Quantity
from jupyter_cake.targets.text import _format_number


@dataclass(frozen=True)
class Target:
    """Where code runs plus the resources it asked for; immutable and hashable."""

    infra: str
    name: str | None = None
    gpus: Gpus | None = None
    cpus: Quantity | None = None
    memory: Quantity | None = None
    nodes: int = 1
    image: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    idle_minutes: float | None = None
    options: tuple[tuple[str, str], ...] = ()
    via: str | None = None  # "sky" or "direct"; None: the infra's default (see backend_name)
    task: str | None = None  # a SkyPilot task YAML (resources, envs, setup, workdir, file_mounts)
    ray: bool = False  # start a Ray cluster in the allocation and point RAY_ADDRESS at it
    spot: bool = False  # spot/preemptible instances, where the infra has them (SkyPilot)
    disk: int | None = None  # boot disk in GB (SkyPilot)

    def __post_init__(self) -> None:
        # Sorting here makes equality and canonical() independent of the order
        # the user (or a caller building a Target directly) listed things in.
        object.__setattr__(self, "env", tuple(sorted((str(k), str(v)) for k, v in self.env)))
        object.__setattr__(self, "options", tuple(sorted((str(k), str(v)) for k, v in self.options)))
        cloud = self.cloud
        if cloud == "local" and (self.via == "sky" or self.task is not None):
            raise TargetError(
                "The local target runs on this machine and never goes through SkyPilot. "
                "Drop --via sky / --task, or name an infra SkyPilot can launch (aws, k8s/<context>, slurm/<cluster>)."
            )
        if self.via == "direct" and cloud not in ("local", "slurm", "k8s"):
            raise TargetError(
                f"Cake has no direct backend for {cloud!r}: clouds are reached through SkyPilot. "
                "Drop --via direct (or write --via sky)."
            )
        if self.via == "direct" and self.task is not None:
            raise TargetError("A SkyPilot task file (--task) needs SkyPilot; drop --via direct.")
        login = self.options_dict().get("login")
        if cloud == "slurm" and login is not None and login != "local":
            # The Slurm backend hands `login` to ssh as the login node's host, like the cluster segment.
            check_host_name(login, f"login option {login!r}", "the SSH host alias of the cluster's login node, or local",
                            'login = "hpc-login"')  # fmt: skip

    @property
    def infra_parts(self) -> tuple[str, ...]:
        # A k8s context may itself contain '/', so it stays one part.
        if self.infra.startswith("k8s/"):
            return tuple(self.infra.split("/", 1))
        return tuple(self.infra.split("/"))

    @property
    def cloud(self) -> str:
        return self.infra_parts[0]

    @property
    def addons(self) -> tuple[str, ...]:
        """The add-ons this target turns on, by entry point name (jupyter_cake.addons)."""
        return ("ray",) if self.ray else ()

    @property
    def backend_name(self) -> str:
        """Which backend serves this target. slurm/ and k8s/ go direct unless ``via = "sky"`` (or a
        SkyPilot task file) asks for SkyPilot; every cloud and ssh node pool goes through SkyPilot."""
        kind = self.cloud
        if kind == "local":
            return "local"
        if self.via == "sky" or self.task is not None:
            return "sky"
        if kind in ("slurm", "k8s"):
            return "slurm" if kind == "slurm" else "kubernetes"
        return "sky"

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def options_dict(self) -> dict[str, str]:
        return dict(self.options)

    def canonical(self) -> str:
        """Text that parse_target() turns back into this target (minus name), except that every --env
        value is masked (``--env HF_TOKEN=***@1f0c9a2e``): this text names sessions and fills status
        tables, so a secret must not be in it. Equal values give equal text (re-attach works), a changed
        value gives other text (a new session with the new value, never the old session's)."""
        tokens = [self.infra]
        for flag, resource in (
            ("--gpus", self.gpus), ("--cpus", self.cpus), ("--memory", self.memory),
        ):
            if resource is not None:
                tokens += [flag, str(resource)]
        if self.nodes != 1:
            tokens += ["--nodes", str(self.nodes)]
        if self.image is not None:
            tokens += ["--image", self.image]
        tokens += [token for key, value in self.env for token in ("--env", _Unquoted(f"{key}={masked_value(key, value)}"))]
        if self.workdir is not None:
            tokens += ["--workdir", self.workdir]
        if self.idle_minutes is not None:
            tokens += ["--idle-minutes", _format_number(self.idle_minutes)]
        for key, value in self.options:
            tokens += ["--option", f"{key}={value}"]
        for flag, text in (("--via", self.via), ("--task", self.task), ("--disk", self.disk)):
            if text is not None:
                tokens += [flag, str(text)]
        tokens += [flag for flag, on in (("--ray", self.ray), ("--spot", self.spot)) if on]
        # A masked value is only [A-Za-z0-9_=*@]: shlex.split reads it back as one token unquoted, and no
        # shell ever sees this text, so its '*' needs no quotes (which would make names harder to read).
        return " ".join(token if isinstance(token, _Unquoted) else shlex.quote(token) for token in tokens)

    def to_dict(self, env_values: bool = True) -> dict[str, object]:
        """JSON-able fields. ``env_values=False``: each --env value masked as in canonical(), for state
        that is not a 0600 file (the store); ``from_dict(d, env=...)`` puts the values back."""
        env = dict(self.env) if env_values else {k: masked_value(k, v) for k, v in self.env}
        return {
            "infra": self.infra,
            "name": self.name,
            "gpus": None if self.gpus is None else {"name": self.gpus.name, "count": self.gpus.count},
            "cpus": _quantity_dict(self.cpus),
            "memory": _quantity_dict(self.memory),
            "nodes": self.nodes,
            "image": self.image,
            "env": env,
            "workdir": self.workdir,
            "idle_minutes": self.idle_minutes,
            "options": dict(self.options),
            "via": self.via,
            "task": self.task,
            "ray": self.ray,
            "spot": self.spot,
            "disk": self.disk,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object], env: Mapping[str, str] | None = None) -> Target:
        """Rebuild (and re-validate) a target saved with to_dict(); ``env``: the --env values of one
        saved with ``env_values=False``, which replace its masked ones.

        Unknown keys are ignored so state written by a newer Cake still loads.
        """
        if not isinstance(d, Mapping):
            raise TargetError(f"A saved target must be a mapping, not {type(d).__name__}. Re-create it with %cake use.")
        saved_env = d.get("env")
        if isinstance(saved_env, Mapping):
            missing = sorted(str(k) for k, v in saved_env.items() if isinstance(v, str) and is_masked(v) and k not in (env or {}))
            if missing:
                raise TargetError(
                    f"The saved target's --env value(s) of {', '.join(missing)} are not in it: Cake keeps them only "
                    "in the session directory's private env file, which is missing. Stop the session (%cake down) "
                    "and start it again with the values."
                )
        if env is not None:
            d = {**d, "env": {**(saved_env if isinstance(saved_env, Mapping) else {}), **env}}
        fields: dict[str, Any] = {"infra": _parse_infra(d.get("infra", "local"), ())}
        name = d.get("name")
        if name is not None and not isinstance(name, str):
            raise _field_error("name", name, "it must be text", "Use the name of a target from targets.toml.")
        fields["name"] = name
        for key in _FIELD_PARSERS:
            if key != "infra" and d.get(key) is not None:
                fields[key] = _parse_field(key, d[key], key)
        if d.get("options") is not None:
            fields["options"] = _parse_mapping(d["options"], "option", strict_values=False)
        return cls(**_as_tuples(fields))

    def describe(self) -> str:
        """Short label for status tables, e.g. ``slurm/hpc/gpu · A100:1 · 8+ CPU``."""
        parts = [self.infra if self.name is None else f"{self.name} ({self.infra})"]
        if self.gpus is not None:
            parts.append(str(self.gpus) if self.gpus.name else f"{self.gpus.count} GPU")
        if self.cpus is not None:
            parts.append(f"{self.cpus} CPU")
        if self.memory is not None:
            parts.append(f"{self.memory} GB")
        if self.nodes != 1:
            parts.append(f"{self.nodes} nodes")
        return " · ".join(parts)


class _Unquoted(str):
    """A canonical() token written as is (see there)."""


def _quantity_dict(q: Quantity | None) -> dict[str, object] | None:
    return None if q is None else {"value": q.value, "or_more": q.or_more}
