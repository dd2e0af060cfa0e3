"""How the other stages use an imported teacher: refuse one that cannot serve their store."""

from __future__ import annotations

from typing import Any

from storage_schema import DatasetStore


def check_fits(teacher: Any, store: DatasetStore, dataset: str) -> None:
    """Refuse an imported teacher that cannot serve ``store``'s train split, in one sentence.

    Args:
        teacher: a :class:`pipeline.imported.ImportedTeacher`.
        store: the dataset store (a fold's view with ``--fold``).
        dataset: the dataset name, for the command in the message.

    Raises:
        ValueError: it was imported for another manifest, holds other classes or another
            size, or lacks a map of a train image (all named together).
    """
    ids = store.ids()
    problems = teacher.fit_problems(
        store.manifest_sha256, store.classes, store.size, [ids[i] for i in store.indices("train")]
    )
    if problems:
        fold = "" if store.fold is None else f" --fold {store.fold}"
        raise ValueError(
            f"imported teacher {teacher.path} does not fit the dataset store {store.path}: "
            f"{'; '.join(problems)}; import the maps for this store (`plc import-teacher "
            f"--dataset {dataset}{fold} --probs DIR --force`)."
        )
