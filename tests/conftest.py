"""Shared test configuration: markers that skip cleanly where a resource is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POLYP_ROOT = SHARED / "datasets" / "polyp-endotect"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_data = pytest.mark.skip(reason=f"real dataset absent: {POLYP_ROOT}")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "data" in item.keywords and not POLYP_ROOT.is_dir():
            item.add_marker(skip_data)


@pytest.fixture
def polyp_root() -> Path:
    """The real polyp dataset in ../shared (tests using it carry the `data` marker)."""
    return POLYP_ROOT
