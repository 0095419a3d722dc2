"""The store is shared by several processes (magics in many kernels, the CLI, the server extension)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from jupyter_cake.store import SCHEMA_VERSION, RunRow, SessionRow, Store


def _session(session_id: str, tmp: Path) -> SessionRow:
    now = time.time()
    return SessionRow(id=session_id, name="n", owner="", target="local", target_json="{}", backend="local",
                      state="running", session_dir=str(tmp), created=now, updated=now)  # fmt: skip


def _writer(path: str, worker: int, count: int) -> None:
    store = Store(Path(path))
    for i in range(count):
        store.add_run(RunRow(id=f"r-{worker}-{i}", session_id="s-shared", state="running", created=time.time()))
        store.update_run(f"r-{worker}-{i}", state="ok", ended=time.time())


def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cake.db"
    Store(path).add_session(_session("s-shared", tmp_path))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 150)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    runs = Store(path).runs(session_id="s-shared", limit=10_000)
    assert len(runs) == 600 and {r.state for r in runs} == {"ok"}


def test_wal_mode_schema_version_and_private_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "cake.db")
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_the_database_is_0600_and_the_data_dir_0700_even_when_they_existed_looser(tmp_path: Path) -> None:
    # A store made by an older Cake (or another tool) under the usual umask: 0644 files in a 0755 dir.
    root = tmp_path / "data"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    path = root / "cake.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        os.chmod(file, 0o644)
    store = Store(path)
    store.add_session(_session("s-abc", tmp_path))
    conn.close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    # a new store is private from its first byte: the files SQLite makes copy the database's mode
    fresh = Store(tmp_path / "new" / "cake.db")
    fresh.add_session(_session("s-def", tmp_path))
    for file in fresh.path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def _database_locked_elsewhere(path: str) -> bool:
    """Whether another process holds one of SQLite's shared locks on the database file (its lock bytes
    sit at 1 GiB + 2 .. + 512, whatever the file's size)."""
    import fcntl

    with open(path, "r+b") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
        except OSError:
            return True
        return False


def test_opening_the_store_again_keeps_the_locks_of_its_open_connections(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops all of this process's POSIX locks on it, SQLite's included:
    a second Store() in a process (the IDE proxy opens several) must not open and close the database
    file itself, or another process takes this one's open connection for gone (and checkpoints under it)."""
    path = tmp_path / "cake.db"
    first = Store(path)
    conn = first._conn()
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sessions").fetchone()  # a read transaction: SHARED on the file
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_database_locked_elsewhere, (str(path),))
        Store(path)
        assert pool.apply(_database_locked_elsewhere, (str(path),)), "Store() dropped the open connection's lock"
    conn.execute("COMMIT")


def test_a_shared_sticky_data_dir_is_left_alone(tmp_path: Path) -> None:
    # CAKE_DATA_DIR=/tmp must not make /tmp private to one user; the store files in it still are.
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    store = Store(shared / "cake.db")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_store_from_a_newer_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "cake.db"
    Store(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    with pytest.raises(RuntimeError, match="newer jupyter-cake.*CAKE_DATA_DIR"):
        Store(path)


def test_prefix_lookup_treats_like_wildcards_literally(tmp_path: Path) -> None:
    store = Store(tmp_path / "cake.db")
    store.add_session(_session("s-abc", tmp_path))
    store.add_run(RunRow(id="r-1234", session_id="s-abc", state="ok", created=time.time()))
    assert [r.id for r in store.find_runs("r-12")] == ["r-1234"]
    assert store.find_runs("%") == [] and store.find_runs("r_1") == []


def test_session_keys_live_only_in_owner_only_files(notebook_session_dir: Path) -> None:
    """The connection file holds the session key: mode 0600; the database never holds it."""
    import json

    from helpers import files_containing

    conn_file = notebook_session_dir / "connection.json"
    assert stat.S_IMODE(conn_file.stat().st_mode) == 0o600
    key = json.loads(conn_file.read_text())["connection"]["key"]
    holders = files_containing(Store().path.parent, key.encode())  # the db, its -wal and -shm among those read
    assert conn_file in holders and all(p.is_relative_to(notebook_session_dir) for p in holders), holders
    assert stat.S_IMODE((notebook_session_dir / "kernel.json").stat().st_mode) == 0o600


@pytest.fixture
def notebook_session_dir() -> Path:
    from helpers import open_notebook

    nb = open_notebook()
    try:
        nb.run("%cake use local --name key-test --new")
        row = Store().live_session("key-test", "")
        assert row is not None
        yield Path(row.session_dir)
        nb.run("%cake down")
    finally:
        nb.close()
