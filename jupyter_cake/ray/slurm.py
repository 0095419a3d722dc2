"""What ``--ray`` adds to a Slurm session's batch script (the add-on's ``BatchLines``).

The head starts with the nanny (jupyter_cake.ray.head, a nanny service) on the first node of the
allocation. With ``--nodes N`` (N > 1) the script also starts one Ray worker per other node, as one
srun step across the allocation in the background; the nanny's step is pinned to the head node. Only
fixed text reaches the script; the lines use the script's own ``$NANNY``, ``$PYTHON`` and ``$SESSION_DIR``.
"""

from __future__ import annotations

from jupyter_cake.addons import BatchLines


def batch_lines(nodes: int) -> BatchLines:
    out = ["# Ray (--ray): the head starts with the nanny on this node, bound to its own address."]
    if nodes <= 1:
        return BatchLines(tuple(out))
    workers = nodes - 1
    out += [
        f"# One Ray worker on each of the other {workers} node(s); each waits for the head, checks its",
        "# Python/Ray versions against the head's and joins with its own address.",
        'HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f'srun --nodes={workers} --ntasks={workers} --ntasks-per-node=1 --exclude="$HEAD_NODE" --kill-on-bad-exit=0 \\',
        '  env PYTHONPATH="$NANNY${PYTHONPATH:+:$PYTHONPATH}" \\',
        '  "$PYTHON" -m jupyter_cake.ray.worker --session-dir "$SESSION_DIR" --python "$PYTHON" &',
    ]
    # The nanny's step (and with it the head) goes to the head node: workers take the others.
    return BatchLines(tuple(out), nanny_step='--nodelist="$HEAD_NODE" ')
