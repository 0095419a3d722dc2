"""Entry point lookups for Cake's plugin groups (backends, add-ons), imported only when one is needed:
scanning the installed distributions costs milliseconds that ``import jupyter_cake`` must not pay."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint


def names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=group))


def find(group: str, name: str) -> EntryPoint | None:
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=group, name=name)), None)
