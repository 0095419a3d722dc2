"""Key=value collections: ``--env K=V`` and backend options (``--option K=V``, extra ``targets.toml`` keys).

Keys are checked so ``canonical()`` splits back unambiguously (env names must also be valid shell
variable names); values from TOML or JSON are stored as text, structured option values as JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from jupyter_cake.targets.envmask import is_masked
from jupyter_cake.targets.errors import TargetError
from jupyter_cake.targets.text import _format_number

# Plain ASCII sets: these strings end up in scheduler flags and file names.
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_OPTION_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*", re.ASCII)


def _parse_pair(text: str, label: str) -> tuple[str, str]:
    """Split ``K=V`` from the command line; V may contain anything, even '='."""
    key, eq, value = text.partition("=")
    if not eq:
        raise TargetError(
            f"{label} expects KEY=VALUE but got {text!r}. Use {label} {text}=VALUE "
            f"(or {text}= for an empty value)."
        )
    key = _check_key(key, label)
    return key, _check_env_value(key, value) if label.endswith("env") else value


def _check_env_value(key: str, value: str) -> str:
    """Refuse a value copied from a session name or status line, where Cake writes ``***@<digest>``
    instead of the value: run with it and the kernel would see that text instead of the secret."""
    if is_masked(value):
        raise TargetError(
            f"--env {key}={value} is a masked value (Cake never shows --env values, in session names or "
            f"anywhere else). Pass the real value, --env {key}=VALUE, or set it in targets.toml."
        )
    return value


def _check_key(key: object, label: str) -> str:
    # Env names must be valid shell variable names; option names may also use
    # '.' and '-' (e.g. "gres-flags") but never '=' or spaces, so --option K=V
    # in canonical() splits back unambiguously.
    is_env = label.endswith("env")
    pattern = _ENV_KEY_RE if is_env else _OPTION_KEY_RE
    if not isinstance(key, str) or not pattern.fullmatch(key):
        allowed = "letters, digits and '_'" if is_env else "letters, digits, '_', '.' and '-'"
        example = "HF_HOME" if is_env else "account"
        raise TargetError(
            f"Invalid {label} name {key!r}: a name must start with a letter or '_' and use only "
            f"{allowed}. Rename it, e.g. {example}."
        )
    return key


def _scalar_text(value: object, label: str, key: str) -> str:
    """Values from TOML or JSON may be numbers or booleans; store them as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_number(value) if math.isfinite(value) else str(value)
    raise TargetError(
        f"Invalid {label} value for {key!r}: {value!r} is not text or a number. Quote it as a string."
    )


def _option_text(value: object) -> str:
    # Backend options are free-form; structured TOML values become JSON text.
    if isinstance(value, (str, bool, int, float)):
        return _scalar_text(value, "option", "")
    return json.dumps(value, default=str, sort_keys=True)


def _parse_mapping(value: object, label: str, strict_values: bool = True) -> dict[str, str]:
    """Validate an env/options table from TOML or from_dict."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in value
    ):
        items = [(p[0], p[1]) for p in value]
    else:
        raise TargetError(f"Invalid {label} value {value!r}: it must be a table. Write it like {{ HF_HOME = \"/scratch/hf\" }}.")
    result: dict[str, str] = {}
    for key, item in items:
        key = _check_key(key, label)
        result[key] = _scalar_text(item, label, key) if strict_values else _option_text(item)
        if label.endswith("env"):
            _check_env_value(key, result[key])
    return result
