"""Exact cosine 1-nearest-neighbour search behind one interface.

Backends: ``faiss-gpu`` (extra ``[gpu]``), ``faiss-cpu`` (extra ``[faiss-cpu]``; never both), ``torch`` (exact matmul + argmax on the
tensors' own device), ``kdtree`` (scipy ``cKDTree``, only for D <= 3) and ``numpy`` (float32
matmul + argmax). All return the same neighbour up to exact (or float32-rounding) ties.

Zero vectors: a zero row has cosine similarity 0 with every row. A zero *query* therefore ties
with the whole database; every backend answers row 0 for it.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata
from types import ModuleType
from typing import Any

import numpy as np
import torch

from pipeline.check import class_argmax

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "faiss-gpu", "faiss-cpu", "torch", "kdtree", "numpy")
KDTREE_MAX_DIM = 3
_EPS = 1e-12
# Similarity-block budget (elements) per chunk: small on CPU (stays in cache; 4096-row blocks
# at N = 40k were 2x slower there), large on CUDA (one kernel launch per many queries).
_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 28}
_GPU_RESOURCES: Any = None


# Distributions that all install the same top-level module ``faiss``: two at once overwrite
# each other's files and the import breaks (or silently loses GPU support).
FAISS_DISTRIBUTIONS: tuple[str, ...] = (
    "faiss-cpu",
    "faiss-gpu",
    "faiss-gpu-cu12",
    "faiss-gpu-cu11",
)


def installed_faiss() -> list[str]:
    """The installed distributions among :data:`FAISS_DISTRIBUTIONS`."""
    found = []
    for name in FAISS_DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def faiss_conflict() -> str | None:
    """A sentence naming the clash when more than one faiss distribution is installed."""
    dists = installed_faiss()
    if len(dists) < 2:
        return None
    return (
        f"{' and '.join(dists)} are installed together; they provide the same `faiss` module "
        f"and break each other: run `pip uninstall -y {' '.join(dists)}`, then install one "
        'extra (`pip install -e ".[gpu]"` or `".[faiss-cpu]"`).'
    )


def _faiss() -> ModuleType | None:
    """The ``faiss`` module, or ``None`` where it does not import."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def probe_faiss_gpu() -> str | None:
    """None when faiss can search on the GPU here, else one sentence saying why not.

    Importing is not enough: the ``faiss-gpu-cu12`` wheel imports and counts GPUs on an
    H100/H200 but has no sm_90 kernels ("no kernel image"), so a tiny exact search is run on
    the GPU and its answer checked.
    """
    conflict = faiss_conflict()
    if conflict is not None:
        return conflict
    faiss = _faiss()
    if faiss is None:
        return "faiss is not installed"
    if not hasattr(faiss, "StandardGpuResources"):
        return "the installed faiss has no GPU support (faiss-cpu)"
    if int(faiss.get_num_gpus()) < 1:
        return "faiss sees no GPU"
    db = np.eye(4, 8, dtype=np.float32)  # (4, 8) unit rows
    try:
        index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), 8)
        index.add(db)
        _, idx = index.search(db[[2, 0]], 1)  # (2, 1)
    except Exception as err:  # e.g. RuntimeError: no kernel image is available for execution
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return (
            f"faiss-gpu cannot run on this GPU: {first}; faiss-gpu-cu12 lacks sm_90 kernels, "
            "the official faiss-gpu wheel has them"
        )
    if np.asarray(idx).reshape(-1).tolist() != [2, 0]:
        return "faiss-gpu answered a self-test search wrongly on this GPU"
    return None


@functools.cache
def _gpu_probe() -> str | None:
    # The probe result is a fact about this process's hardware and installed wheels, which do
    # not change while it runs; probing once keeps `auto` cheap per call.
    reason = probe_faiss_gpu()
    if reason is not None:
        logger.debug("faiss-gpu unavailable: %s", reason)
    return reason


def faiss_gpu_available() -> bool:
    """Whether faiss searches correctly on a GPU here (see :func:`probe_faiss_gpu`)."""
    return _gpu_probe() is None


def resolve_backend(name: str, device: torch.device | str | None = None) -> str:
    """Turn a backend name (possibly ``"auto"``) into a concrete, usable backend.

    ``"auto"`` picks faiss-gpu only where faiss has GPU support, sees a GPU and passes a
    self-test search on it (:func:`probe_faiss_gpu`), else ``torch`` when ``device`` is CUDA,
    else ``numpy``: never a faiss that cannot run on the device it finds. (DESIGN.md named
    faiss-cpu for the CPU; measured here, numpy's blocked matmul is 1.1x faster at
    5000x60000x64 and 4x faster at SC's D = 16, and it is exact too: see BENCHMARKS.md.)

    Args:
        name: one of :data:`BACKENDS`.
        device: where the features live (only consulted by ``"auto"``).

    Returns:
        A concrete backend name (never ``"auto"``).

    Raises:
        ValueError: for an unknown name, or a backend whose library is unavailable.
    """
    if name not in BACKENDS:
        raise ValueError(f"search backend must be one of {', '.join(BACKENDS)}; got {name!r}.")
    if name == "auto":
        if faiss_gpu_available():
            return "faiss-gpu"
        if device is not None and torch.device(device).type == "cuda":
            return "torch"
        return "numpy"
    if name == "faiss-gpu" and not faiss_gpu_available():
        raise ValueError(
            f"search backend 'faiss-gpu' is unavailable ({_gpu_probe()}); install the [gpu] "
            "extra (the official faiss-gpu wheel) or use backend 'torch' (exact, no extra needed)."
        )
    if name == "faiss-cpu":
        conflict = faiss_conflict()
        if conflict is not None:
            raise ValueError(f"search backend 'faiss-cpu': {conflict}")
        if _faiss() is None:
            raise ValueError(
                "search backend 'faiss-cpu' needs faiss; install the [faiss-cpu] extra "
                "(`pip install -e \".[faiss-cpu]\"`) or use 'numpy' (exact, no extra needed)."
            )
    return name


def _check_inputs(queries: torch.Tensor, database: torch.Tensor) -> None:
    """Validate ranks, widths, devices and finiteness of the search inputs."""
    if queries.ndim != 2 or database.ndim != 2:
        raise ValueError(
            f"queries and database must be 2-D (Q, D) and (N, D); got {tuple(queries.shape)} "
            f"and {tuple(database.shape)}."
        )
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries and database must have the same width D; got {queries.shape[1]} and "
            f"{database.shape[1]}."
        )
    if queries.device != database.device:
        raise ValueError(
            f"queries ({queries.device}) and database ({database.device}) must be on the same "
            "device; move one with .to()."
        )
    if not (torch.isfinite(queries).all() and torch.isfinite(database).all()):
        raise ValueError("queries and database must be finite (found NaN or inf features).")


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """float32 (float64 kept as is)."""
    return x if x.dtype == torch.float64 else x.float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows in float32 (float64 kept); zero rows stay zero. (R, D) -> (R, D)."""
    x = _as_float(x)
    return x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)


def _chunk_rows(batch_size: int, n_database: int, device_type: str) -> int:
    """Queries per chunk: at most ``batch_size``, and a (rows, N) block within the budget."""
    budget = _CHUNK_ELEMENTS.get(device_type, _CHUNK_ELEMENTS["cpu"])
    return max(1, min(batch_size, budget // max(n_database, 1)))


def _search_torch(q: torch.Tensor, db: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Exact inner-product argmax in query chunks on the tensors' device."""
    q, db = q.detach(), db.detach()  # search is not differentiable; mm(out=) refuses grads
    db_t = db.T.contiguous()  # (D, N)
    rows = _chunk_rows(batch_size, db.shape[0], q.device.type)
    block = torch.empty(min(rows, len(q)), db.shape[0], dtype=q.dtype, device=q.device)
    parts = []
    for i in range(0, len(q), rows):
        chunk = q[i : i + rows]
        parts.append(class_argmax(torch.mm(chunk, db_t, out=block[: len(chunk)]), 1))
    return torch.cat(parts)


def _search_numpy(q: torch.Tensor, db: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float32 inner-product argmax with numpy, in query chunks."""
    qn = q.detach().cpu().numpy().astype(np.float32, copy=False)
    dbn_t = np.ascontiguousarray(db.detach().cpu().numpy().astype(np.float32, copy=False).T)
    rows = _chunk_rows(batch_size, dbn_t.shape[1], "cpu")
    parts = [(qn[i : i + rows] @ dbn_t).argmax(axis=1) for i in range(0, len(qn), rows)]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def _gpu_resources() -> Any:
    """One shared ``StandardGpuResources`` per process (created on first use)."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = _faiss().StandardGpuResources()  # type: ignore[union-attr]
    return _GPU_RESOURCES


def _search_faiss(q: torch.Tensor, db: torch.Tensor, gpu: bool) -> torch.Tensor:
    """``IndexFlatIP`` search (exact); on the GPU through ``GpuIndexFlatIP``."""
    faiss = _faiss()
    assert faiss is not None  # resolve_backend guarantees it
    qn = np.ascontiguousarray(q.detach().float().cpu().numpy())
    dbn = np.ascontiguousarray(db.detach().float().cpu().numpy())
    dim = dbn.shape[1]
    index = faiss.GpuIndexFlatIP(_gpu_resources(), dim) if gpu else faiss.IndexFlatIP(dim)
    index.add(dbn)
    _, idx = index.search(qn, 1)  # (Q, 1)
    return torch.from_numpy(idx[:, 0].astype(np.int64))


def _search_kdtree(q: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """cKDTree on unit vectors: max cosine == min euclidean distance on the unit sphere.

    Zero database rows (cosine 0 with everything) are not on the sphere, so they are kept out of
    the tree and chosen only where the best non-zero row has negative cosine.
    """
    try:
        from scipy.spatial import cKDTree
    except ImportError as err:  # pragma: no cover - scipy ships with the test extras
        raise ValueError(
            "search backend 'kdtree' needs scipy; install scipy or use 'torch'."
        ) from err
    qn = q.detach().double().cpu().numpy()
    dbn = db.detach().double().cpu().numpy()
    nonzero = np.flatnonzero(np.linalg.norm(dbn, axis=1) > _EPS)
    if len(nonzero) == 0:
        return torch.zeros(len(qn), dtype=torch.int64)
    _, pos = cKDTree(dbn[nonzero]).query(qn, k=1)
    idx = nonzero[pos]
    zero_rows = np.setdiff1d(np.arange(len(dbn)), nonzero)
    if len(zero_rows):
        best = np.einsum("qd,qd->q", qn, dbn[idx])  # (Q,) cosine of the chosen rows
        idx = np.where(best < 0.0, zero_rows[0], idx)
    return torch.from_numpy(idx.astype(np.int64))


def nearest_neighbours(
    queries: torch.Tensor,
    database: torch.Tensor,
    backend: str = "auto",
    normalize: bool = True,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Index of the database row most similar (cosine, or inner product) to each query.

    Args:
        queries: (Q, D) float.
        database: (N, D) float, on the same device as ``queries``.
        backend: one of :data:`BACKENDS`.
        normalize: L2-normalise both sides first (cosine similarity). ``False`` ranks by raw
            inner product; ``kdtree`` refuses it.
        batch_size: maximum queries per matmul chunk for ``torch`` and ``numpy`` (further
            capped so that one (chunk, N) similarity block stays within a memory budget).

    Returns:
        (Q,) int64 on the queries' device. A zero query answers row 0.

    Raises:
        ValueError: bad shapes or devices, non-finite values, N == 0 with Q > 0, an unknown or
            unavailable backend, ``kdtree`` with D > 3 or without normalisation.
    """
    _check_inputs(queries, database)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
    if len(queries) == 0:
        return torch.zeros(0, dtype=torch.int64, device=queries.device)
    if len(database) == 0:
        raise ValueError("database is empty (N == 0): there is no neighbour to return.")
    name = resolve_backend(backend, queries.device)
    dim = queries.shape[1]
    if name == "kdtree" and (dim > KDTREE_MAX_DIM or not normalize):
        raise ValueError(
            f"search backend 'kdtree' answers cosine similarity for D <= {KDTREE_MAX_DIM} only "
            f"(got D = {dim}, normalize = {normalize}); use 'torch' or 'faiss-cpu'."
        )
    q = _unit(queries) if normalize else _as_float(queries)
    db = _unit(database) if normalize else _as_float(database)
    if q.dtype != db.dtype:
        q, db = q.double(), db.double()
    if name == "torch":
        idx = _search_torch(q, db, batch_size)
    elif name == "numpy":
        idx = _search_numpy(q, db, batch_size)
    elif name == "kdtree":
        idx = _search_kdtree(q, db)
    else:
        idx = _search_faiss(q, db, gpu=name == "faiss-gpu")
    idx = idx.to(queries.device)
    zero_query = queries.abs().amax(dim=1) == 0  # (Q,)
    return torch.where(zero_query, torch.zeros_like(idx), idx)
