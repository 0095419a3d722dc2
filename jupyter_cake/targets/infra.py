"""Infra strings: where a target runs, in SkyPilot's syntax (``local``, ``slurm/<cluster>[/<partition>]``,
``k8s[/<context>]``, ``ssh/<pool>``, ``<cloud>[/<region>[/<zone>]]``).

``parse_infra`` validates one and returns its canonical spelling (``kubernetes`` becomes ``k8s``, cloud
regions are lowercased) so equal requests compare equal; an unknown one gets a "did you mean"
suggestion, among named targets too when the caller passes their names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from jupyter_cake.targets.errors import TargetError, _closest
from jupyter_cake.targets.text import _NAME_RE

# SkyPilot's cloud names, as they appear as the first infra segment.
CLOUDS: tuple[str, ...] = (
    "aws", "gcp", "azure", "lambda", "runpod", "oci", "ibm", "scp", "cudo",
    "fluidstack", "paperspace", "do", "nebius", "vast", "hyperbolic", "vsphere",
    "seeweb", "primeintellect", "shadeform", "coreweave",
)
_KINDS: tuple[str, ...] = ("local", "slurm", "k8s", "ssh", *CLOUDS)
# "kubernetes" is accepted on input but stored as "k8s" so equal requests
# compare equal.
_KIND_ALIASES: dict[str, str] = {"kubernetes": "k8s"}
_INFRA_FORMS = (
    "local, slurm/<cluster>[/<partition>], k8s[/<context>], ssh/<pool> or "
    "<cloud>[/<region>[/<zone>]]"
)

# Segments that name a host ssh connects to (a Slurm login node's alias; an SSH node pool, whose hosts
# SkyPilot reaches with ssh): what each one is, for the message that refuses a bad one.
_HOST_LABELS: dict[str, str] = {
    "cluster": "the SSH host alias of the cluster's login node",
    "pool": "the name of a SkyPilot SSH node pool",
}

# Kubernetes contexts are often ARNs ("arn:aws:eks:...:cluster/name").
_CONTEXT_RE = re.compile(r"[A-Za-z0-9._:@-]+(?:/[A-Za-z0-9._:@-]+)*", re.ASCII)


def parse_infra(text: str) -> str:
    """Validate an infra string and return its canonical spelling."""
    return _parse_infra(text, ())


def _parse_infra(text: object, named: Sequence[str]) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TargetError(f"Invalid infra {text!r}: it must be non-empty text. Use {_INFRA_FORMS}.")
    raw = text.strip()
    head, sep, rest = raw.partition("/")
    kind = head.lower()
    kind = _KIND_ALIASES.get(kind, kind)
    parts = rest.split("/") if sep else []
    if kind == "local":
        return _infra_local(raw, parts)
    if kind == "slurm":
        return _infra_segments(raw, kind, parts, ("cluster", "partition"), 1, "slurm/hpc/gpu")
    if kind == "ssh":
        return _infra_segments(raw, kind, parts, ("pool",), 1, "ssh/my-pool")
    if kind == "k8s":
        return _infra_k8s(raw, rest if sep else None)
    if kind in CLOUDS:
        # Cloud regions and zones are lowercase in every SkyPilot cloud.
        lowered = [p.lower() for p in parts]
        return _infra_segments(raw, kind, lowered, ("region", "zone"), 0, "aws/us-east-1")
    raise _unknown_infra(raw, head, sep + rest, named)


def _infra_local(raw: str, parts: list[str]) -> str:
    if parts:
        raise TargetError(f"Invalid infra {raw!r}: local takes no cluster or region. Use just local.")
    return "local"


def _infra_segments(
    raw: str, kind: str, parts: list[str], labels: tuple[str, ...], required: int, example: str
) -> str:
    if not required <= len(parts) <= len(labels):
        # Optional segments nest, as in SkyPilot's docs: aws[/<region>[/<zone>]].
        optional = labels[required:]
        form = kind + "".join(f"/<{label}>" for label in labels[:required])
        form += "".join(f"[/<{label}>" for label in optional) + "]" * len(optional)
        raise TargetError(f"Invalid infra {raw!r}: expected {form}. Use something like {example}.")
    for label, part in zip(labels, parts):
        if not _NAME_RE.fullmatch(part):
            raise TargetError(
                f"Invalid {label} {part!r} in infra {raw!r}: use only letters, digits, '.', '_' "
                f"and '-', like {example}."
            )
        if label in _HOST_LABELS:
            check_host_name(part, f"{label} {part!r} in infra {raw!r}", _HOST_LABELS[label], example)
    return "/".join((kind, *parts))


def check_host_name(value: str, label: str, what: str, example: str) -> str:
    """Refuse a host name that ssh would read as something else: one starting with '-' becomes an
    option (``-oProxyCommand=...`` runs a command), whitespace splits it. Checked here, when the target
    is parsed, so a bad name is reported before any ssh runs."""
    if value.startswith("-"):
        why = "it starts with '-', which ssh would read as an option, not a host"
    elif not value or any(c.isspace() for c in value):
        why = "it is empty" if not value else "it contains whitespace, which no host name has"
    else:
        return value
    raise TargetError(f"Invalid {label}: {why}. It must be {what}; use a name like {example}.")


def _infra_k8s(raw: str, context: str | None) -> str:
    if context is None:
        return "k8s"
    if not _CONTEXT_RE.fullmatch(context):
        raise TargetError(
            f"Invalid Kubernetes context {context!r} in infra {raw!r}: use a context name from "
            "`kubectl config get-contexts`, like k8s/my-context."
        )
    return f"k8s/{context}"


def _unknown_infra(raw: str, head: str, tail: str, named: Sequence[str]) -> TargetError:
    # Prefer a close named target (whole text), else fix only the first segment.
    suggestion = _closest(raw, named) if named else None
    if suggestion is None:
        kind = _closest(head.lower(), [*_KINDS, *_KIND_ALIASES])
        suggestion = kind + tail if kind else None
    what = "infra or named target" if named else "infra"
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    names = f"; named targets: {', '.join(sorted(named))}" if named else ""
    return TargetError(
        f"Unknown {what} {raw!r}.{hint} Use {_INFRA_FORMS}, where <cloud> is one of "
        f"{', '.join(CLOUDS)}{names}."
    )
