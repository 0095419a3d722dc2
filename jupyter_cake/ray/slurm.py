"""What ``--ray`` adds to a Slurm session's batch script.

The head starts with the nanny (jupyter_cake.ray.head) on the first node of the allocation. With
``--nodes N`` (N > 1) the script also starts one Ray worker per other node, as one srun step across
the allocation in the background; the nanny's step is pinned to the head node. Only fixed text and
``shlex.quote``d values reach the script: the spec is JSON made by Cake, quoted as one word.
"""

from __future__ import annotations

import shlex

from jupyter_cake.backends.slurm.script import JobSpec


def nanny_args(spec: JobSpec) -> str:
    """Extra arguments of the nanny's srun line."""
    return f" --ray {shlex.quote(spec.ray_spec)}" if spec.ray_spec else ""


def srun_placement(spec: JobSpec) -> str:
    """Where the nanny's step goes: the head node, when workers take the others."""
    return '--nodelist="$HEAD_NODE" ' if spec.ray_spec and spec.nodes > 1 else ""


def lines(spec: JobSpec) -> list[str]:
    if not spec.ray_spec:
        return []
    out = ["# Ray (--ray): the head starts with the nanny on this node, bound to its own address."]
    if spec.nodes > 1:
        workers = spec.nodes - 1
        out += [
            f"# One Ray worker on each of the other {workers} node(s); each waits for the head, checks its",
            "# Python/Ray versions against the head's and joins with its own address.",
            'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f'srun --nodes={workers} --ntasks={workers} --ntasks-per-node=1 --exclude="$HEAD_NODE" --kill-on-bad-exit=0 \\',
            '  env PYTHONPATH="$NANNY${PYTHONPATH:+:$PYTHONPATH}" \\',
            '  "$PYTHON" -m jupyter_cake.ray.worker --session-dir "$SESSION_DIR" --python "$PYTHON" &',
        ]
    return out
