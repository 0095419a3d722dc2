"""The address a node is reached at by the other nodes of its allocation (stdlib). Free ports are the
nanny's (``jupyter_cake.nanny.nanny.free_ports``), which ships beside these modules."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess


def slurm_node_address() -> str | None:
    """This node's NodeAddr as Slurm knows it (the address the cluster uses to reach the node)."""
    node = os.environ.get("SLURMD_NODENAME")
    if not node or not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for field in out.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1] or None
    return None


def cluster_address() -> str:
    """The IPv4 address other nodes reach this one at: Slurm's NodeAddr, else this host's name.
    Never a wildcard; a loopback answer is refused by the caller when other nodes must connect."""
    name = slurm_node_address() or socket.gethostname()
    address = socket.gethostbyname(name)
    if ipaddress.ip_address(address).is_unspecified:
        raise RuntimeError(f"{name} resolves to {address}, which is no address other nodes can reach")
    return address


def route_address(peer: str) -> str:
    """The local address packets to ``peer`` leave from: this node's address on the peer's network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((peer, 9))  # UDP connect sends nothing; it only picks the route
        return str(sock.getsockname()[0])
