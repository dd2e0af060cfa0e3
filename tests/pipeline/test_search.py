"""Tests for pipeline.search: every backend against a float64 brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import search
from pipeline.search import BACKENDS, nearest_neighbours, resolve_backend

# faiss-cpu is an optional extra ([faiss-cpu]); its backend is tested where it is installed
FAISS_CPU = ("faiss-cpu",) if search._faiss() is not None else ()
CONCRETE = (*FAISS_CPU, "torch", "kdtree", "numpy")


def oracle(q: torch.Tensor, db: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Float64 cosine similarities (Q, N) and the best index per query."""
    qn = q.double().numpy()
    dbn = db.double().numpy()
    qn = qn / np.maximum(np.linalg.norm(qn, axis=1, keepdims=True), 1e-300)
    dbn = dbn / np.maximum(np.linalg.norm(dbn, axis=1, keepdims=True), 1e-300)
    sims = qn @ dbn.T
    return sims, sims.argmax(axis=1)


def assert_matches_oracle(idx: torch.Tensor, q: torch.Tensor, db: torch.Tensor) -> None:
    """Same index as the oracle, except where the best two differ by float32 rounding only."""
    sims, best = oracle(q, db)
    got = idx.numpy()
    rows = np.arange(len(q))
    same = got == best
    near_tie = sims[rows, best] - sims[rows, got] < 1e-5
    assert np.all(same | near_tie), (got[~same], best[~same])
    assert np.mean(same) > 0.95


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    q=st.integers(1, 40),
    n=st.integers(1, 60),
    d=st.integers(2, 3),
    backend=st.sampled_from(CONCRETE),
)
def test_backends_match_brute_force_low_dim(
    seed: int, q: int, n: int, d: int, backend: str
) -> None:
    g = torch.Generator().manual_seed(seed)
    queries, database = torch.randn(q, d, generator=g), torch.randn(n, d, generator=g)
    idx = nearest_neighbours(queries, database, backend=backend, batch_size=7)
    assert idx.dtype == torch.int64 and idx.shape == (q,)
    assert_matches_oracle(idx, queries, database)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    q=st.integers(1, 50),
    n=st.integers(1, 80),
    d=st.integers(4, 32),
    backend=st.sampled_from((*FAISS_CPU, "torch", "numpy", "auto")),
)
def test_backends_match_brute_force_high_dim(
    seed: int, q: int, n: int, d: int, backend: str
) -> None:
    g = torch.Generator().manual_seed(seed)
    queries, database = torch.randn(q, d, generator=g), torch.randn(n, d, generator=g) * 3.0
    idx = nearest_neighbours(queries, database, backend=backend, batch_size=5)
    assert_matches_oracle(idx, queries, database)


@pytest.mark.parametrize("backend", CONCRETE)
def test_one_dimension_gives_a_same_sign_row(backend: str) -> None:
    # D = 1: cosine is +-1 only, so ties are exact; the answer must have the query's sign.
    q = torch.tensor([[2.0], [-0.5]])
    db = torch.tensor([[-3.0], [1.0], [4.0]])
    out = nearest_neighbours(q, db, backend=backend).tolist()
    assert out[0] in (1, 2) and out[1] == 0


def test_cosine_not_inner_product_hand_case() -> None:
    db = torch.tensor([[10.0, 0.0], [0.6, 0.8]])
    q = torch.tensor([[0.5, 0.9]])
    for backend in CONCRETE:
        assert nearest_neighbours(q, db, backend=backend).tolist() == [1]
    # Raw inner product prefers the long vector: 5.0 > 1.02.
    for backend in ("torch", "numpy", *FAISS_CPU):
        assert nearest_neighbours(q, db, backend=backend, normalize=False).tolist() == [0]


@pytest.mark.parametrize("backend", CONCRETE)
def test_empty_queries_return_empty(backend: str) -> None:
    out = nearest_neighbours(torch.zeros(0, 3), torch.randn(5, 3), backend=backend)
    assert out.shape == (0,) and out.dtype == torch.int64
    out = nearest_neighbours(torch.zeros(0, 3), torch.zeros(0, 3), backend=backend)
    assert out.shape == (0,)


@pytest.mark.parametrize("backend", CONCRETE)
def test_empty_database_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="database is empty"):
        nearest_neighbours(torch.randn(2, 3), torch.zeros(0, 3), backend=backend)


@pytest.mark.parametrize("backend", CONCRETE)
def test_zero_vectors(backend: str) -> None:
    db = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    q = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.1, 1.0, 0.0]])
    # zero query -> row 0; [-1,0,0]: cos -1 with row 0, 0 with the zero row 1 and row 2 (tie
    # between rows 1 and 2, both similarity 0: either is right); third -> row 2.
    out = nearest_neighbours(q, db, backend=backend).tolist()
    assert out[0] == 0 and out[1] in (1, 2) and out[2] == 2


def test_kdtree_refused_above_three_dims() -> None:
    with pytest.raises(ValueError, match="'kdtree' answers cosine similarity for D <= 3"):
        nearest_neighbours(torch.randn(2, 4), torch.randn(3, 4), backend="kdtree")
    with pytest.raises(ValueError, match="normalize = False"):
        nearest_neighbours(torch.randn(2, 3), torch.randn(3, 3), backend="kdtree", normalize=False)


def test_bad_inputs_refused() -> None:
    with pytest.raises(ValueError, match="same width D"):
        nearest_neighbours(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="must be 2-D"):
        nearest_neighbours(torch.randn(2, 3, 1), torch.randn(3, 3))
    with pytest.raises(ValueError, match="must be finite"):
        nearest_neighbours(torch.tensor([[float("nan"), 1.0]]), torch.randn(3, 2))
    with pytest.raises(ValueError, match="batch_size"):
        nearest_neighbours(torch.randn(2, 3), torch.randn(3, 3), batch_size=0)


def test_resolve_unknown_lists_choices() -> None:
    with pytest.raises(ValueError, match="one of auto, faiss-gpu, faiss-cpu, torch, kdtree, numpy"):
        resolve_backend("annoy")
    assert BACKENDS[0] == "auto"


def test_resolve_auto_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "faiss_gpu_available", lambda: False)
    assert resolve_backend("auto") == "numpy"
    assert resolve_backend("auto", "cpu") == "numpy"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    monkeypatch.setattr(search, "_faiss", lambda: None)
    assert resolve_backend("auto", "cpu") == "numpy"
    with pytest.raises(ValueError, match="needs faiss"):
        resolve_backend("faiss-cpu")


def test_resolve_auto_prefers_faiss_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "faiss_gpu_available", lambda: True)
    assert resolve_backend("auto", "cpu") == "faiss-gpu"
    assert resolve_backend("faiss-gpu") == "faiss-gpu"


def test_faiss_gpu_unavailable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "faiss_gpu_available", lambda: False)
    with pytest.raises(ValueError, match=r"install the \[gpu\] extra .* or use backend 'torch'"):
        resolve_backend("faiss-gpu")
    for name in ("torch", "numpy", "kdtree", *FAISS_CPU):
        assert resolve_backend(name) == name


def test_float64_and_half_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(20, 8, generator=g), torch.randn(30, 8, generator=g)
    ref = nearest_neighbours(q, db, backend="torch")
    assert torch.equal(nearest_neighbours(q.double(), db.double(), backend="torch"), ref)
    assert_matches_oracle(
        nearest_neighbours(q.half(), db.half(), backend="numpy"), q.half(), db.half()
    )


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ("torch", "auto"))
def test_cuda_matches_oracle(backend: str) -> None:
    g = torch.Generator().manual_seed(1)
    q, db = torch.randn(500, 16, generator=g), torch.randn(3000, 16, generator=g)
    idx = nearest_neighbours(q.cuda(), db.cuda(), backend=backend, batch_size=128)
    assert idx.device.type == "cuda"
    assert_matches_oracle(idx.cpu(), q, db)


@pytest.mark.gpu
def test_faiss_gpu_matches_oracle() -> None:
    if not search.faiss_gpu_available():
        pytest.skip("faiss without GPU support")
    g = torch.Generator().manual_seed(2)
    q, db = torch.randn(200, 16, generator=g), torch.randn(1000, 16, generator=g)
    assert_matches_oracle(nearest_neighbours(q, db, backend="faiss-gpu"), q, db)


# --- `auto` never picks a faiss that cannot run here: the probe, with fake faiss modules ---


class _FakeGpuIndex:
    """GpuIndexFlatIP stand-in: exact search, or the error/answer a broken wheel gives."""

    error: Exception | None = None
    wrong = False

    def __init__(self, resources: object, dim: int) -> None:
        self.rows = np.zeros((0, dim), dtype=np.float32)

    def add(self, x: np.ndarray) -> None:
        self.rows = np.concatenate([self.rows, x])

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.error is not None:
            raise self.error
        sims = q @ self.rows.T  # (Q, N)
        idx = sims.argmin(1) if self.wrong else sims.argmax(1)
        return sims.max(1, keepdims=True), idx[:, None]


def _fake_faiss(gpus: int = 1, error: Exception | None = None, wrong: bool = False):
    import types

    index = type("GpuIndexFlatIP", (_FakeGpuIndex,), {"error": error, "wrong": wrong})
    return types.SimpleNamespace(
        StandardGpuResources=object, GpuIndexFlatIP=index, get_num_gpus=lambda: gpus
    )


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch):
    """Only faiss-gpu 'installed'; the once-per-process probe cache cleared around the test."""
    monkeypatch.setattr(search, "installed_faiss", lambda: ["faiss-gpu"])
    search._gpu_probe.cache_clear()
    yield monkeypatch
    search._gpu_probe.cache_clear()


def test_auto_picks_a_working_faiss_gpu(fresh_probe: pytest.MonkeyPatch) -> None:
    fresh_probe.setattr(search, "_faiss", lambda: _fake_faiss())
    assert search.probe_faiss_gpu() is None
    assert resolve_backend("auto", "cuda") == "faiss-gpu"


def test_auto_skips_faiss_gpu_without_sm90_kernels(fresh_probe: pytest.MonkeyPatch) -> None:
    """faiss-gpu-cu12 on an H200: imports, counts the GPU, then fails in the first kernel."""
    err = RuntimeError("CUDA error 209 no kernel image is available for execution on the device")
    fresh_probe.setattr(search, "_faiss", lambda: _fake_faiss(error=err))
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    assert resolve_backend("auto", "cpu") == "numpy"
    with pytest.raises(ValueError, match=r"no kernel image .* official faiss-gpu wheel"):
        resolve_backend("faiss-gpu")


@pytest.mark.parametrize(
    ("fake", "why"),
    [
        (lambda: _fake_faiss(gpus=0), "faiss sees no GPU"),
        (lambda: _fake_faiss(wrong=True), "answered a self-test search wrongly"),
        (lambda: SimpleNamespaceCPU(), "no GPU support"),
        (lambda: None, "faiss is not installed"),
    ],
)
def test_auto_skips_faiss_that_cannot_search_on_the_gpu(
    fresh_probe: pytest.MonkeyPatch, fake, why: str
) -> None:
    fresh_probe.setattr(search, "_faiss", fake)
    assert why in search.probe_faiss_gpu()
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match=why):
        resolve_backend("faiss-gpu")


class SimpleNamespaceCPU:
    """faiss-cpu: no GPU classes at all."""

    IndexFlatIP = object


def test_both_faiss_wheels_installed_is_named(fresh_probe: pytest.MonkeyPatch) -> None:
    fresh_probe.setattr(search, "installed_faiss", lambda: ["faiss-cpu", "faiss-gpu"])
    fresh_probe.setattr(search, "_faiss", lambda: _fake_faiss())
    assert resolve_backend("auto", "cuda") == "torch"  # never a half-overwritten faiss
    with pytest.raises(ValueError, match=r"faiss-cpu and faiss-gpu are installed together"):
        resolve_backend("faiss-cpu")
    with pytest.raises(ValueError, match=r"pip uninstall -y faiss-cpu faiss-gpu"):
        resolve_backend("faiss-gpu")


def test_probe_runs_once_per_process(fresh_probe: pytest.MonkeyPatch) -> None:
    calls = []
    fresh_probe.setattr(search, "probe_faiss_gpu", lambda: calls.append(1))
    for _ in range(3):
        resolve_backend("auto", "cpu")
    assert calls == [1]
