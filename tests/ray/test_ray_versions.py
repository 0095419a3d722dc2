"""The Python/Ray version check between this machine and the cluster, up front and in one message."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from helpers import Notebook, nanny_pids

from jupyter_cake.ray.versions import local_versions, mismatch
from jupyter_cake.store import Store


def test_version_mismatch_is_one_clear_error(fresh_notebook: Notebook, tmp_path: Path, cake_data_dir: Path) -> None:
    """The cluster side reports another Ray (a real distribution record on its PYTHONPATH, as a stale
    install would); the session refuses before starting Ray, naming both versions, and leaves nothing."""
    fake = tmp_path / "site" / "ray-2.59.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 2.59.0\n")
    before = nanny_pids(cake_data_dir)
    start = time.monotonic()
    error = fresh_notebook.fails(f"%cake use local --ray --new --name ray-mismatch --env PYTHONPATH={fake.parent}")
    assert "Ray version check failed" in error and "2.59.0 on the cluster" in error, error
    assert re.search(r"Ray 2\.\d+\.\d+ here", error), error
    assert time.monotonic() - start < 60  # refused before a Ray start, not after one
    assert nanny_pids(cake_data_dir) == before
    row = Store().live_session("ray-mismatch", "")
    assert row is None


def test_mismatch_names_every_difference_and_the_fix() -> None:
    here = {"python": "3.11.7", "ray": "2.60.0"}
    assert mismatch(here, {"python": "3.11.9", "ray": "2.60.0", "host": "n1"}) is None  # patch releases mix
    both = mismatch(here, {"python": "3.12.1", "ray": "2.59.0", "host": "n1"}, "/opt/py/bin/python3")
    assert both is not None
    assert "Python 3.11.7 here vs 3.12.1 on the cluster" in both and "Ray 2.60.0 here vs 2.59.0 on the cluster" in both
    assert "/opt/py/bin/python3 on n1" in both and "ray_check=off" in both
    missing = mismatch(here, {"python": "3.11.7", "ray": None, "host": "n1"}, "python3")
    assert missing == "Ray is not installed for python3 on n1. Install it there: python3 -m pip install ray[default]==2.60.0"
    assert mismatch({"python": "3.11.7", "ray": None}, {"python": "3.11.7", "ray": "2.60.0"}) is None
    assert local_versions()["ray"]  # read from metadata: no `import ray` needed


def test_ray_on_a_backend_without_ray_fails_before_allocating_anything() -> None:
    from jupyter_cake.errors import CakeError
    from jupyter_cake.manager import Cake
    from jupyter_cake.targets import parse_target

    cake = Cake()
    before = cake.store.sessions()  # the data dir may hold earlier tests' sessions
    with pytest.raises(CakeError, match=r"Ray sessions run on local and slurm/\.\.\. targets so far, not through the kubernetes"):
        cake.use(parse_target("k8s/nowhere --ray"))
    assert cake.store.sessions() == before  # nothing was started, so nothing is left to clean up
