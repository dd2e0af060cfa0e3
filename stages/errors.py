"""The exception types the CLI reports as one message with exit code 1 (user errors).

A stage's own user-error type subclasses :class:`UserError` (e.g. the readers'
``DatasetError``), so this module imports no stage: the list is complete without them.
"""

from __future__ import annotations

from stages.outputs import OutputError
from stages.paths import MissingInputError
from storage_schema import StoreError


class UserError(Exception):
    """Bad input a stage found and explained: the message is for the user, no traceback."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    MissingInputError,
    StoreError,
    UserError,
    OutputError,
)
