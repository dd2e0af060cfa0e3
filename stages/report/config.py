"""Options of ``plc report`` and ``plc inspect`` (declared once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.options import StageConfig, option


@dataclass(frozen=True)
class ReportConfig(StageConfig):
    """Options of ``plc report``."""

    runs: Path = option(
        help="Folder of runs (each with metrics.json), e.g. runs/<ds>.", exists=True
    )
    out: Path = option(help="Markdown report path (PNG figures are written beside it).")
    labels: Path | None = option(
        None,
        help="Label store, or a folder of label stores (one per fold), for label quality.",
        exists=True,
    )
    teacher_metrics: Path | None = option(
        None,
        help="Teacher metrics JSON, or a folder searched for every teacher.metrics.json (one "
        "per fold, e.g. models/<ds>) for the teacher–student gap.",
        exists=True,
    )
    bootstrap: int = option(2000, help="Resamples of the image-level paired bootstrap.", ge=100)


@dataclass(frozen=True)
class InspectConfig(StageConfig):
    """Options of ``plc inspect``."""

    labels: str = option(help="Label store: a path or URL.", argument=True, exists=True)
    image: str = option(help="Image id (or its index in the store).")
    out: Path = option(help="PNG path.")
    data: str | None = option(
        None, help="Dataset store (path or URL); default from the label store.", exists=True
    )
    tile: int = option(192, help="Side of each panel tile in pixels.", ge=32, le=1024)
