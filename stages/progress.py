"""One progress-bar helper for every long stage (rich), silenced by ``--no-progress``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(
    items: Iterable[T], description: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """Yield ``items`` while showing a progress bar when ``enabled``."""
    if not enabled:
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, transient=False)
