"""The one exception type of the on-disk contracts."""

from __future__ import annotations

from collections.abc import Sequence


class StoreError(Exception):
    """A store, manifest or encoding input that breaks the on-disk contract.

    The message is one clear sentence naming the path or field and what to do, or, when
    several things are wrong at once, a header line followed by one problem per line.
    ``problems`` holds those lines (a one-element list for a single-sentence error).
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems is not None else [message]

    @classmethod
    def from_problems(cls, header: str, problems: Sequence[str]) -> StoreError:
        """Build one error listing every problem, one per line under ``header``."""
        lines = "\n".join(f"  - {p}" for p in problems)
        return cls(f"{header}\n{lines}", problems)


class RemoteReadError(StoreError):
    """A remote store could not be reached within the retry limit (not a corrupt store)."""
