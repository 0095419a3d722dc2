"""The store is shared by several processes (magics in many kernels, the CLI, the server extension)."""

from __future__ import annotations

import multiprocessing
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

    conn_file = notebook_session_dir / "connection.json"
    assert stat.S_IMODE(conn_file.stat().st_mode) == 0o600
    key = json.loads(conn_file.read_text())["connection"]["key"]
    db = Store().path.read_bytes() + Path(str(Store().path) + "-wal").read_bytes()
    assert key.encode() not in db
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
