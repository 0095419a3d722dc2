"""`--env` values are secrets: the kernel sees them, nothing Cake writes or shows has them in clear.

A real local session (nanny + kernel) started with a random secret; then every place Cake writes or shows
a target is searched for it: the session name, the store's bytes, `%cake status` / `cake status` / `cake
runs`, and every file under the data dir except the session's own 0600 env file.
"""

from __future__ import annotations

import json
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Notebook, cake_cli, files_containing, open_notebook, text
from jupyter_cake.store import SESSION_ENV_FILE, SessionRow, Store


@pytest.fixture(scope="module")
def secret() -> str:
    return "s3cr3t-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def nb(secret: str) -> Iterator[Notebook]:
    with open_notebook() as notebook:
        # No --name: the default name is the canonical target line, which used to carry the value.
        notebook.run(f"%cake use local --env CAKE_TEST_SECRET={secret} --new")
        try:
            yield notebook
        finally:
            notebook.run("%cake down")


def test_the_kernel_sees_the_value_and_nothing_else_has_it(nb: Notebook, secret: str, cake_data_dir: Path) -> None:
    # The value, reversed: the journal keeps what the cell prints, and a cell printing the secret would
    # put it there by the user's own doing. The code holds no secret either (the store keeps run code).
    cell = nb.run('%%cake\nimport os\nprint(os.environ["CAKE_TEST_SECRET"][::-1])')
    assert text(cell) == secret[::-1] + "\n"

    store = Store()
    rows = [r for r in store.sessions(live_only=True) if "CAKE_TEST_SECRET" in r.target]
    assert len(rows) == 1
    row = rows[0]
    assert secret not in row.name and secret not in row.target and secret not in row.target_json
    assert "CAKE_TEST_SECRET=***@" in row.name  # the name still says which env the session has

    # Only the session's env file holds the value, and it is the user's alone.
    env_file = Path(row.session_dir) / SESSION_ENV_FILE
    assert json.loads(env_file.read_text()) == {"CAKE_TEST_SECRET": secret}
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert files_containing(cake_data_dir, secret.encode()) == [env_file]  # the store's db/-wal/-shm included
    assert stat.S_IMODE((cake_data_dir / "env.key").stat().st_mode) == 0o600

    status = text(nb.run("%cake status"))
    assert row.id in status and secret not in status
    for args in (("status",), ("status", "--all"), ("runs",), ("runs", "--all")):
        done = cake_cli(*args)
        assert done.returncode == 0, done.stderr
        assert secret not in done.stdout + done.stderr, args


def test_the_same_value_re_attaches_and_another_starts_a_new_session(nb: Notebook, secret: str) -> None:
    with open_notebook() as other:
        # Re-attaching rebuilds the whole target (with the value, from the env file): it must work.
        other.run(f"%cake use local --env CAKE_TEST_SECRET={secret}")
        cell = other.run('%%cake\nimport os\nprint(os.environ["CAKE_TEST_SECRET"][::-1])')
        assert text(cell) == secret[::-1] + "\n"
        live = [r for r in Store().sessions(live_only=True) if "CAKE_TEST_SECRET" in r.target]
        assert len(live) == 1  # re-attached, not a second session

        # A changed token must never run in the session holding the old one.
        other.run("%cake use local --env CAKE_TEST_SECRET=rotated")
        cell = other.run('%%cake\nimport os\nprint(os.environ["CAKE_TEST_SECRET"])')
        assert text(cell) == "rotated\n"
        other.run("%cake down")


def test_a_masked_value_pasted_back_is_refused(nb: Notebook) -> None:
    row = next(r for r in Store().sessions(live_only=True) if "CAKE_TEST_SECRET" in r.target)
    error = nb.fails(f"%cake use {row.target}")
    assert "is a masked value" in error and "--env CAKE_TEST_SECRET=VALUE" in error


def test_rows_written_before_masking_are_masked_in_every_view(cake_data_dir: Path) -> None:
    """A store from an older Cake has names and targets with the values in them: the views mask them."""
    old_secret = "old-" + secrets.token_hex(8)
    line = f"local --env HF_TOKEN={old_secret}"
    now = time.time()
    session_dir = cake_data_dir / "sessions" / "s-old00001"
    session_dir.mkdir(parents=True, exist_ok=True)
    Store().add_session(SessionRow(
        id="s-old00001", name=line, owner="", target=line, target_json=json.dumps({"infra": "local", "env": {"HF_TOKEN": old_secret}}),
        backend="local", state="failed", session_dir=str(session_dir), created=now, updated=now,
        reason=f"start failed for {line}",
    ))  # fmt: skip
    done = cake_cli("status", "--all")
    assert done.returncode == 0 and "s-old00001" in done.stdout, done.stdout + done.stderr
    assert old_secret not in done.stdout and "HF_TOKEN=***" in done.stdout

    from jupyter_cake.server.api import session_json

    shown = json.dumps(session_json(Store().session("s-old00001")))  # type: ignore[arg-type]
    assert old_secret not in shown and "HF_TOKEN=***" in shown


def test_session_target_rebuilds_the_values_and_says_when_the_file_is_gone(tmp_path: Path) -> None:
    from jupyter_cake.store import save_session_env, session_target
    from jupyter_cake.targets import TargetError, parse_target

    target = parse_target(["local", "--env", "A=1", "--cpus", "2"])
    save_session_env(tmp_path, target)
    now = time.time()
    row = SessionRow(id="s-x", name="n", owner="", target=target.canonical(), target_json=json.dumps(target.to_dict(env_values=False)),
                     backend="local", state="running", session_dir=str(tmp_path), created=now, updated=now)  # fmt: skip
    assert session_target(row) == target
    (tmp_path / SESSION_ENV_FILE).unlink()
    with pytest.raises(TargetError, match="env file, which is missing"):
        session_target(row)
