"""Ray on a Cake session: a Ray head (and workers) in the allocation, RAY_ADDRESS in the kernel.

Modules, smallest first:

- ``versions``  Python/Ray versions of this machine and of the cluster, and the one-line verdict
- ``ports``     free ports and the node's cluster address (stdlib)
- ``head``      the Ray head the nanny starts next to the kernel: start, readiness, activity, stop
- ``worker``    ``python -m jupyter_cake.ray.worker``: joins a node of a multi-node allocation
- ``kernel_hooks``  inside the kernel: worker prints reach the cell that caused them
- ``slurm``     the lines the sbatch script gains for ``--ray`` (workers via srun)
- ``session``   client side: wait for the head, forward the dashboard, ``%cake ray``
- ``jobs``      ``cake run --ray``: Ray Jobs API submission, log streaming through the session

The modules named in ``REMOTE_MODULES`` run on cluster nodes next to the nanny, so they use only the
standard library (ray itself is imported by the kernel's user code, never by Cake's import).
"""

REMOTE_MODULES = ("__init__.py", "versions.py", "ports.py", "head.py", "worker.py", "kernel_hooks.py")
