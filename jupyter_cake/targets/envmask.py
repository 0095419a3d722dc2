"""``--env`` values are secrets until proven otherwise: how Cake writes a target without them.

Users pass tokens with ``--env HF_TOKEN=hf_...``, and the target's text becomes the default session name,
the store's ``target`` column and every status line. So wherever a target is written down, each value is
replaced by ``***@<digest>``: the digest is the first 8 hex digits of an HMAC-SHA256, keyed by a random
per-user key (``env.key`` in Cake's data dir, mode 0600), of the key name and the value.

Why a keyed digest and not just ``***``: the default session name is the canonical target, and ``%cake
use`` re-attaches to the live session of that name. With ``***`` alone, changing a token would silently
re-attach to the session still running with the old one; with the digest a changed value is a different
name, so a new session starts with the new value, and the same value re-attaches as before. Why keyed:
an unkeyed hash of a short or guessable value (a password, ``DEBUG=1``) is recovered by trying candidates;
without the key file (which sits beside the other 0600 secrets: connection files, session keys) nothing
can be checked, and 32 bits are too few to confirm a guess of a long token even with it.

``mask_env_text`` masks values in text written before this rule (old store rows), for the views.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path

MASK = "***"
_DIGEST_HEX = 8
MASKED_RE = re.compile(r"\*\*\*@[0-9a-f]{8}", re.ASCII)  # a value as canonical() writes it
KEY_FILE = "env.key"

_keys: dict[Path, bytes] = {}  # per data dir: one read per process


def data_dir() -> Path:
    """Cake's per-user data directory: ``$CAKE_DATA_DIR``, else ``<jupyter data dir>/cake``. The store,
    the session directories and the env key live there."""
    override = os.environ.get("CAKE_DATA_DIR")
    if override:
        return Path(override)
    from jupyter_core.paths import (
        jupyter_data_dir,  # small, pure Python; only needed without the override
    )

    return Path(jupyter_data_dir()) / "cake"


def _user_key() -> bytes:
    """The per-user HMAC key, created (0600, in a 0700 dir) on first use. If the data dir cannot be
    written, a key for this process only: names then differ between processes (no re-attach by default
    name across them), which is the safe way to fail: values are never written in clear instead."""
    root = data_dir()
    key = _keys.get(root)
    if key is not None:
        return key
    path = root / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
        except FileExistsError:  # another process made it first: use theirs
            key = path.read_bytes()
        except OSError:
            pass
    except OSError:
        key = secrets.token_bytes(32)
    if len(key) < 16:  # truncated (disk full when it was written): a weak key must not be used
        key = secrets.token_bytes(32)
    _keys[root] = key
    return key


def masked_value(name: str, value: str) -> str:
    """``***@<digest>``: equal for equal (name, value) under this user's key, and reveals nothing else."""
    digest = hmac.new(_user_key(), f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()[:_DIGEST_HEX]
    return f"{MASK}@{digest}"


def is_masked(value: str) -> bool:
    return MASKED_RE.fullmatch(value) is not None


def mask_env_text(text: str) -> str:
    """``text`` with the value of every ``--env K=V`` (or ``--env=K=V``) replaced by ``***``: for target
    lines and names that may predate masking. Text that is not a shell-like line is masked word by word."""
    quote: Callable[[str], str] = shlex.quote
    try:
        tokens = shlex.split(text)
    except ValueError:  # an unbalanced quote (prose, an error message): whitespace words, as they are
        tokens, quote = text.split(), _as_is
    if "--env" not in tokens and not any(t.startswith("--env=") for t in tokens):
        return text
    out: list[str] = []
    after_flag = False
    for token in tokens:
        if after_flag:
            out.append(_mask_pair(token, quote))
        elif token.startswith("--env="):
            out.append("--env=" + _mask_pair(token[len("--env="):], quote))
        else:
            out.append(quote(token))
        after_flag = token == "--env"
    return " ".join(out)


def retype_hint(canonical: str) -> str:
    """A stored target line as a command to suggest: each masked value becomes ``<value>``, which the user
    types again (the masked form itself is refused as a value)."""
    return MASKED_RE.sub("<value>", canonical)


def _as_is(word: str) -> str:
    return word


def _mask_pair(pair: str, quote: Callable[[str], str]) -> str:
    key, eq, value = pair.partition("=")
    if not eq:
        return quote(pair)
    return f"{quote(key)}={value if is_masked(value) else MASK}"
