"""Stage ``import-teacher``: a folder of a teacher's probability maps → an imported teacher.

Every map is read and checked before anything is written; all problems (missing train
images, unknown ids, wrong shape or class count, 3-D volumes, non-finite values, values
outside [0, 1], sums off 1) are listed in one :class:`~stages.prepare.readers.DatasetError`.
Maps of every manifest image present are imported (the train split's are required; the
test split's, where present, let the teacher be scored). The result
(:mod:`pipeline.imported`) is written atomically at the conventional teacher path, where
``plc train-assistant`` and ``plc precompute`` find it; a rerun over the same files and
options is a no-op, and another teacher there is replaced only with ``--force``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stages.import_teacher.config import SUM_TOLERANCE, ImportTeacherConfig
from stages.import_teacher.maps import Expected, MapError, detect_layout, list_maps, read_map
from stages.locks import holds_output_lock
from stages.outputs import check_writable, unwritable
from stages.prepare.readers.base import DatasetError, Problem
from stages.progress import track

logger = logging.getLogger(__name__)


@holds_output_lock("plc import-teacher", lambda cfg: cfg.out_path)  # one writer per output
def run(cfg: ImportTeacherConfig) -> Path:
    """Import the maps of ``cfg.probs`` for ``cfg.dataset``'s store; return the output folder.

    Raises:
        DatasetError: listing every bad or missing map (nothing is written).
        FileExistsError: the output exists and is not this import, without ``--force``.
        OutputError: the output cannot be written.
    """
    from pipeline.checkpoint import file_sha256
    from pipeline.imported import write_imported
    from stages.data import open_store

    store = open_store(cfg.data_path, cfg.fold)
    out = cfg.out_path
    layout, problems = detect_layout(cfg.probs, cfg.layout)
    if layout is None:
        raise DatasetError(f"{cfg.probs}: nothing was imported:", problems)
    if layout != "arrays" and cfg.kind == "logits":
        raise ValueError(f"--kind logits is only for array maps; {cfg.probs} holds {layout} "
                         "maps, which are probabilities: drop --kind logits.")  # fmt: skip
    found, problems = list_maps(cfg.probs, layout, cfg.map_suffix)
    files_sha = {found[i].name: file_sha256(found[i]) for i in sorted(found)}
    attrs = _attrs(cfg, store, layout, files_sha)
    if _up_to_date(cfg, out, attrs):
        return out
    check_writable(out)
    ids, probs = _read_all(cfg, store, layout, found, problems)
    existed = out.exists()
    try:
        digest = write_imported(out, probs, ids, attrs)
    except OSError as err:
        raise unwritable(err, out, existed=existed) from err
    split = dict(zip(store.ids(), store.split.tolist(), strict=True))
    counts = {s: sum(split[i] == s for i in ids) for s in ("train", "val", "test")}
    logger.info("imported teacher → %s (%d maps: %s; %s layout; digest %s)", out, len(ids),
                counts, layout, digest[:12])  # fmt: skip
    _score(cfg, out, store, ids, probs, digest)
    return out


def _score(cfg: ImportTeacherConfig, out: Path, store, ids: list[str], probs, digest: str) -> None:
    """The imported teacher's test scores, as ``plc train-teacher`` writes a trained one's:
    per-image Dice, IoU, HD95 and ASSD of the maps' argmax on the test split, to
    ``<out>.metrics.json`` (``models/<ds>/teacher.metrics.json`` by default, where
    ``plc report`` finds them). Only when the maps cover every test image."""
    import numpy as np
    import torch

    from pipeline.boundary import boundary_distances
    from pipeline.metrics import dice_iou, mean_std
    from stages.evaluate import write_metrics

    all_ids, row = store.ids(), {image_id: r for r, image_id in enumerate(ids)}
    test = store.indices("test")
    covered = [t for t in test if all_ids[t] in row]
    if len(test) == 0 or len(covered) < len(test):
        logger.info("the maps cover %d of %d test images: the imported teacher is not scored",
                    len(covered), len(test))  # fmt: skip
        return
    pred = torch.from_numpy(np.stack([probs[row[all_ids[t]]].argmax(0) for t in test]))
    masks = torch.from_numpy(store.read_masks(test).astype(np.int64))
    n_classes = len(store.classes)
    scores = dict(zip(("dice", "iou"), dice_iou(pred, masks, n_classes), strict=True))
    scores["hd95"], scores["assd"] = boundary_distances(pred, masks, n_classes)
    metrics: dict = {"n_images": len(test)}
    for name, values in scores.items():
        metrics[name], metrics[f"{name}_std"] = mean_std(values)
    metrics["boundary_undefined"] = int(torch.isnan(scores["hd95"]).sum())
    metrics["per_image"] = [
        {"id": all_ids[t], **{name: float(v[i]) for name, v in scores.items()}}
        for i, t in enumerate(test)
    ]
    extra = {"role": "teacher", "teacher_kind": "imported", "import_digest": digest,
             "model": None, "fold": cfg.fold}  # fmt: skip
    path = write_metrics(metrics, out.with_suffix(".metrics.json"), extra)
    logger.info("imported teacher: test Dice %.4f → %s", metrics["dice"], path)


def _attrs(cfg: ImportTeacherConfig, store, layout: str, files_sha: dict[str, str]) -> dict:
    """What the artifact says about itself (all of it enters its digest)."""
    from stages.records import config_dict

    return {
        "dataset_name": store.name,
        "dataset_path": str(cfg.data_path),
        "manifest_sha256": store.manifest_sha256,
        "fold": cfg.fold,
        "classes": list(store.classes),
        "size": list(store.size),
        "kind": "probabilities" if layout != "arrays" else cfg.kind,
        "layout": layout,
        "source": {
            "probs": str(cfg.probs),
            "options": config_dict(cfg),
            "resampling": "as plc prepare resized the images: cv2.INTER_AREA when both "
            "sides shrink, else cv2.INTER_LINEAR (maps at the store's size kept); each pixel "
            "renormalised to sum to 1",
            "sum_tolerance": SUM_TOLERANCE,
        },
        "files_sha256": files_sha,
    }


def _up_to_date(cfg: ImportTeacherConfig, out: Path, attrs: dict) -> bool:
    """True when ``out`` holds this import (same files, options and store); refuse any other
    teacher there without ``--force``."""
    from pipeline.imported import is_imported, open_imported

    if cfg.force or not out.exists():
        return False
    if is_imported(out):
        old = open_imported(out).attrs
        if all(old.get(k) == v for k, v in attrs.items()):
            logger.info("imported teacher %s is up to date (same maps and options); use --force "
                        "to rebuild", out)  # fmt: skip
            return True
    raise FileExistsError(
        f"{out} already holds another teacher (a checkpoint or another import); pass --force to "
        "replace it, or --out to import elsewhere."
    )


def _read_all(
    cfg: ImportTeacherConfig, store, layout: str, found: dict[str, Path], problems: list[Problem]
) -> tuple[list[str], np.ndarray]:
    """Read and check every map of a manifest image; raise one DatasetError listing every
    problem, or return the ids (manifest order) and their (N, C, H, W) float32 maps."""
    all_ids = store.ids()
    known = set(all_ids)
    train = [all_ids[i] for i in store.indices("train")]
    if missing := [i for i in train if i not in found]:
        from pipeline.imported import name_ids

        problems.append(Problem(cfg.probs, f"no map of {len(missing)} train image(s): "
                                f"{name_ids(missing)}"))  # fmt: skip
    for key in sorted(set(found) - known):
        problems.append(Problem(found[key], f"no image has the id {key!r} in the dataset "
                                f"store's manifest ({store.path})"))  # fmt: skip
    expected = Expected(tuple(store.classes), tuple(store.size), cfg.kind, SUM_TOLERANCE)
    heights = store.manifest.column("orig_height").to_pylist()
    widths = store.manifest.column("orig_width").to_pylist()
    ids = [(i, row) for row, i in enumerate(all_ids) if i in found]  # manifest order
    maps: list[np.ndarray] = []
    for key, row in track(ids, "reading maps", total=len(ids), enabled=cfg.progress):
        try:
            probs = read_map(found[key], layout, expected, (heights[row], widths[row]))
        except MapError as err:
            problems.append(Problem(found[key], str(err)))
            continue
        if not problems:  # stop keeping maps once anything failed
            maps.append(probs)
    if problems:
        raise DatasetError(
            f"teacher maps at {cfg.probs} ({layout} layout) have {len(problems)} problem(s); "
            "fix them and rerun (nothing was written):",
            problems,
        )
    return [key for key, _ in ids], np.stack(maps)
