"""The exception types the CLI reports as one message with exit code 1 (user errors)."""

from __future__ import annotations

from stages.outputs import OutputError
from stages.paths import MissingInputError
from stages.readers import DatasetError
from storage_schema import StoreError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    MissingInputError,
    StoreError,
    DatasetError,
    OutputError,
)
