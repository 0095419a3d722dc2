"""SQLite store shared by the magics, the CLI and the server extension.

One file, ``<jupyter data dir>/cake/cake.db``, in WAL mode so readers never block the writer and several
processes (notebook kernels, ``cake`` CLI, Jupyter server) can use it at once. Each process opens its
own connection; every write is one short transaction with a busy timeout.

Secrets never go in here: a session row points at its session directory, where the connection file
with the key lives with mode 0600, and so do the target's ``--env`` values (``env.json``): the row's
``target`` and ``target_json`` have them masked (``Target.canonical()``, ``to_dict(env_values=False)``),
and ``session_target`` puts them back for re-attaching. The data dir is 0700 and the database 0600
(tightened if they already existed looser), since run code and reasons are the user's own business too.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from jupyter_cake.targets import Target, TargetError, parse_target
from jupyter_cake.targets.envmask import data_dir

SCHEMA_VERSION = 1

RowT = TypeVar("RowT")  # SessionRow or RunRow: a dataclass whose fields are the table's columns

# Each entry migrates from version i to i+1; append, never edit a shipped one.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE sessions (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL,
        owner          TEXT NOT NULL DEFAULT '',
        target         TEXT NOT NULL,          -- Target.canonical()
        target_json    TEXT NOT NULL,
        backend        TEXT NOT NULL,
        state          TEXT NOT NULL,          -- starting | running | stopped | failed
        reason         TEXT,
        session_dir    TEXT NOT NULL,
        allocation     TEXT NOT NULL DEFAULT '{}',
        price_per_hour REAL,
        idle_minutes   REAL,
        created        REAL NOT NULL,
        updated        REAL NOT NULL
    );
    CREATE INDEX sessions_by_name ON sessions(name, owner, state);
    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        session_id  TEXT NOT NULL REFERENCES sessions(id),
        kind        TEXT NOT NULL DEFAULT 'cell',
        code        TEXT NOT NULL DEFAULT '',
        source      TEXT NOT NULL DEFAULT '',  -- notebook path / script the run came from
        state       TEXT NOT NULL,             -- queued | running | ok | error | aborted | lost
        detached    INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        created     REAL NOT NULL,
        started     REAL,
        ended       REAL
    );
    CREATE INDEX runs_by_session ON runs(session_id, created);
    CREATE INDEX runs_by_created ON runs(created);
    """,
)

LIVE_SESSION_STATES = ("starting", "running")
FINAL_RUN_STATES = ("ok", "error", "aborted", "lost")


SESSION_ENV_FILE = "env.json"  # in a session directory, 0600: the target's --env values


def default_path() -> Path:
    return data_dir() / "cake.db"


@dataclass
class SessionRow:
    id: str
    name: str
    owner: str
    target: str
    target_json: str
    backend: str
    state: str
    session_dir: str
    created: float
    updated: float
    reason: str | None = None
    allocation: str = "{}"
    price_per_hour: float | None = None
    idle_minutes: float | None = None

    @property
    def allocation_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.allocation or "{}")
        return data


@dataclass
class RunRow:
    id: str
    session_id: str
    state: str
    created: float
    kind: str = "cell"
    code: str = ""
    source: str = ""
    detached: int = 0
    error: str | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


def _columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        private_dir(self.path.parent)
        _private_file(self.path)
        self._local = threading.local()
        self._migrate()

    # -- connection handling ----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode, and skips an fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer jupyter-cake (schema {version} > {SCHEMA_VERSION}); "
                    "upgrade jupyter-cake, or set CAKE_DATA_DIR to use a separate store."
                )
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    # -- sessions -----------------------------------------------------------------------------------
    def add_session(self, row: SessionRow) -> None:
        self._insert("sessions", row)

    def update_session(self, session_id: str, **changes: Any) -> None:
        changes["updated"] = time.time()
        self._update("sessions", session_id, changes, _columns(SessionRow))

    def session(self, session_id: str) -> SessionRow | None:
        return next(iter(self._rows(SessionRow, "SELECT * FROM sessions WHERE id=?", (session_id,))), None)

    def find_session(self, prefix_or_name: str) -> list[SessionRow]:
        """Sessions whose id starts with, or whose name equals, the given text (newest first). A target
        line with --env values (``cake down 'local --env K=v'``) also finds the session it names by
        default, whose name has the values masked (Target.canonical())."""
        return self._rows(
            SessionRow, r"SELECT * FROM sessions WHERE id LIKE ? ESCAPE '\' OR name IN (?, ?) ORDER BY created DESC",
            (_like_prefix(prefix_or_name), prefix_or_name, _default_name(prefix_or_name)),
        )

    def live_session(self, name: str, owner: str) -> SessionRow | None:
        rows = self._rows(
            SessionRow, "SELECT * FROM sessions WHERE name=? AND owner=? AND state IN ('starting','running') "
            "ORDER BY created DESC LIMIT 1", (name, owner),
        )  # fmt: skip
        return next(iter(rows), None)

    def sessions(self, live_only: bool = False) -> list[SessionRow]:
        where = "WHERE state IN ('starting','running')" if live_only else ""
        return self._rows(SessionRow, f"SELECT * FROM sessions {where} ORDER BY created DESC")

    # -- runs ---------------------------------------------------------------------------------------
    def add_run(self, row: RunRow) -> None:
        self._insert("runs", row)

    def update_run(self, run_id: str, **changes: Any) -> None:
        self._update("runs", run_id, changes, _columns(RunRow))

    def run(self, run_id: str) -> RunRow | None:
        return next(iter(self._rows(RunRow, "SELECT * FROM runs WHERE id=?", (run_id,))), None)

    def find_runs(self, prefix: str) -> list[RunRow]:
        return self._rows(RunRow, r"SELECT * FROM runs WHERE id LIKE ? ESCAPE '\' ORDER BY created DESC", (_like_prefix(prefix),))

    def runs(
        self, session_id: str | None = None, states: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> list[RunRow]:
        clauses, params = [], []
        if session_id:
            clauses.append("session_id=?")
            params.append(session_id)
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._rows(RunRow, f"SELECT * FROM runs {where} ORDER BY created DESC LIMIT ? OFFSET ?", [*params, limit, offset])

    def _insert(self, table: str, row: SessionRow | RunRow) -> None:
        cols = _columns(type(row))
        with self._write() as conn:
            conn.execute(f"INSERT INTO {table}({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})",
                         [getattr(row, c) for c in cols])  # fmt: skip

    def _rows(self, row_type: type[RowT], sql: str, params: Sequence[Any] = ()) -> list[RowT]:
        return [row_type(**dict(r)) for r in self._conn().execute(sql, params)]

    def _update(self, table: str, key: str, changes: dict[str, Any], allowed: list[str]) -> None:
        unknown = set(changes) - set(allowed)
        if unknown:
            raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
        assignments = ", ".join(f"{c}=?" for c in changes)
        with self._write() as conn:
            conn.execute(f"UPDATE {table} SET {assignments} WHERE id=?", [*changes.values(), key])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _default_name(text: str) -> str:
    """The default session name of ``text`` read as a target line with --env, else ``text`` itself."""
    if "--env" not in text:
        return text
    try:
        return parse_target(text).canonical()
    except TargetError:
        return text


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching values that start with ``text`` literally (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def new_id(prefix: str) -> str:
    import secrets

    return f"{prefix}{secrets.token_hex(4)}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (0700), tightened if it existed looser. Not a
    directory someone else owns, nor a shared sticky one (CAKE_DATA_DIR=/tmp): chmod there would lock
    others out, and Cake's own files inside are private by their own modes anyway."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite creates it, and its -wal/-shm files,
    with the umask's mode, usually 0644; those two copy the database's mode), and tighten an old one.
    An existing database is never opened here, only chmod-ed: closing any descriptor of a file drops
    every POSIX lock this process holds on it, and so the locks of SQLite connections already open
    on it in this process (a second Store() in the same process would corrupt their view)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) != 0o600:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass


def write_private_json(path: Path, data: Any) -> None:
    """``data`` as JSON in ``path``, readable by this user only (0600 from its creation): session keys,
    --env values."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def save_session_env(session_dir: Path, target: Target) -> None:
    """Keep ``target``'s --env values in its session directory (0600), the one place they are written:
    re-attaching needs the whole target (a later ``%%cake --ray`` starts a copy of it with the values)."""
    if target.env:
        write_private_json(session_dir / SESSION_ENV_FILE, target.env_dict())


def session_target(row: SessionRow) -> Target:
    """The full target of a session row: ``target_json`` (values masked) plus the session's env file.
    Rows written before masking carry their values in ``target_json`` and have no env file."""
    path = Path(row.session_dir) / SESSION_ENV_FILE
    env = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    return Target.from_dict(json.loads(row.target_json), env=env)


def sessions_root(store: Store) -> Path:
    return private_dir(store.path.parent / "sessions")

