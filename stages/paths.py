"""Artifact paths by convention; every stage lets the user override them."""

from __future__ import annotations

from pathlib import Path


def data_path(dataset: str) -> Path:
    """The prepared dataset store of ``dataset``."""
    return Path("data") / f"{dataset}.zarr"


def model_dir(dataset: str, fold: int | None = None) -> Path:
    """Folder holding the teacher team of ``dataset`` (of its cross-validation ``fold``)."""
    return Path("models") / dataset / (f"fold{fold}" if fold is not None else "")


def teacher_path(dataset: str, fold: int | None = None) -> Path:
    return model_dir(dataset, fold) / "teacher.pt"


ASSISTANT_FILES = {"false-pixel": "assistant_fp.pt", "boundary": "assistant_bd.pt"}


def assistant_path(dataset: str, kind: str, fold: int | None = None) -> Path:
    """Checkpoint path of the assistant of ``kind`` ("false-pixel" or "boundary")."""
    return model_dir(dataset, fold) / ASSISTANT_FILES[kind]


def labels_path(dataset: str, fold: int | None = None) -> Path:
    """The label store of ``dataset``; one per fold (``labels/<ds>-fold<F>.zarr``)."""
    name = f"{dataset}-fold{fold}" if fold is not None else dataset
    return Path("labels") / f"{name}.zarr"


def report_path(dataset: str) -> Path:
    return Path("reports") / f"{dataset}.md"


class MissingInputError(FileNotFoundError):
    """A prerequisite artifact is missing; the message names the command that makes it."""


def require(path: Path, what: str, command: str) -> Path:
    """Return ``path`` if it exists, else raise naming the command that creates it."""
    if not Path(path).exists():
        raise MissingInputError(f"{what} not found at {path}: run `{command}` first.")
    return Path(path)
