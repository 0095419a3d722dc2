"""The named targets file: ``targets.toml`` with one ``[targets.NAME]`` table per target.

``config_path`` says where it is, ``load_named_targets`` reads it (a missing file means none; TOML errors
name the line), and ``_named_fields`` validates one entry when it is used, so one broken entry does not
block the others. Joining a named entry with a magic line happens one level up, in ``line``.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from jupyter_cake.targets.errors import TargetError
from jupyter_cake.targets.fields import _FIELD_PARSERS, _parse_field
from jupyter_cake.targets.pairs import _check_key, _option_text


def config_path() -> pathlib.Path:
    """``$CAKE_CONFIG`` if set, else ``<jupyter config dir>/cake/targets.toml``."""
    override = os.environ.get("CAKE_CONFIG")
    if override:
        return pathlib.Path(override).expanduser()
    # Imported here so that importing this module stays cheap.
    from jupyter_core.paths import jupyter_config_dir

    return pathlib.Path(jupyter_config_dir()) / "cake" / "targets.toml"


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef,import-not-found]
    return tomllib.loads(text)


_TOML_WHERE_RE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _toml_error(path: pathlib.Path, exc: ValueError, text: str) -> TargetError:
    message = str(exc)
    match = _TOML_WHERE_RE.search(message)
    reason = message[: match.start()] if match else message
    line = getattr(exc, "lineno", None)
    if line is None and match:
        line = int(match.group(1)) if match.group(1) else text.count("\n") + 1
    where = f" on line {line}" if line else ""
    return TargetError(
        f"{path} is not valid TOML{where}: {reason.rstrip('.')}. "
        "Fix that line (see https://toml.io) or point CAKE_CONFIG at another file."
    )


def load_named_targets(path: pathlib.Path | None = None) -> dict[str, dict[str, object]]:
    """Read ``[targets.NAME]`` tables; a missing file simply means none.

    Only the file's shape is checked here; each target's fields are validated
    when it is used, so one broken entry does not block all the others.
    """
    path = config_path() if path is None else pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TargetError(
            f"Could not read the Cake targets file {path} ({exc.strerror}). "
            "Fix its permissions or point CAKE_CONFIG at another file."
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError(f"{path} is not UTF-8 text. Save it as UTF-8 TOML.") from None
    try:
        doc = _toml_loads(text)
    except ValueError as exc:  # TOMLDecodeError subclasses ValueError
        raise _toml_error(path, exc, text) from None
    targets = doc.get("targets", {})
    if not isinstance(targets, dict):
        raise TargetError(f"In {path}, 'targets' must be a table. Write each target as [targets.NAME].")
    result: dict[str, dict[str, object]] = {}
    for name, table in targets.items():
        if not isinstance(table, dict):
            raise TargetError(
                f"In {path}, targets.{name} must be a table. Write it as [targets.{name}] with infra = \"...\" below."
            )
        result[name] = dict(table)
    return result


def _named_fields(name: str, table: object, source: pathlib.Path | None) -> dict[str, Any]:
    """Validate one [targets.NAME] table; errors say which target and file."""
    try:
        if not isinstance(table, Mapping):
            raise TargetError(f"it must be a table, not {table!r}.")
        fields: dict[str, Any] = {"infra": "local", "env": {}, "options": {}}
        for key, value in table.items():
            field = str(key).replace("-", "_")
            if field in _FIELD_PARSERS:
                fields[field] = _parse_field(field, value, str(key))
            else:  # anything else is a backend option (account, qos, namespace, ...)
                fields["options"][_check_key(key, "option")] = _option_text(value)
        return fields
    except TargetError as exc:
        where = source if source is not None else config_path()
        raise TargetError(f"Named target {name!r} in {where} is invalid: {exc}") from None
