"""The student DataLoader: reads equal direct store reads, workers change nothing, pairing holds."""

from __future__ import annotations

import dataclasses
import json
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_stores import make_stores

from pipeline.augment import AugmentConfig
from stages.data import epoch_batches
from stages.distill.loader import (
    MAX_GAP,
    RawBatch,
    StoreBatches,
    StoreSource,
    StudentStream,
    decode_codes,
    make_loader,
    read_runs,
    runs,
)
from storage_schema import (
    LabelStore,
    StoreError,
    decode_logprobs,
    open_dataset_store,
    open_label_store,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_stores(tmp_path_factory.mktemp("loader"))


def source(stores: tuple[Path, Path], variant: str | None = "plc") -> StoreSource:
    data, labels = stores
    store = open_dataset_store(data)
    return StoreSource(
        data=str(data),
        indices=store.indices("train"),
        labels=None if variant is None else str(labels),
        variant=variant,
        manifest_sha256=store.manifest_sha256,
    )


def plan(n: int, batch_size: int = 4, seed: int = 0):
    return lambda epoch: list(epoch_batches(n, batch_size, epoch, seed, drop_last=True))


def stream(
    stores, variant: str | None, *, workers: int = 0, seed: int = 0, augment: bool = True
) -> StudentStream:
    src = source(stores, variant)
    loader = make_loader(
        src, plan(len(src.indices), seed=seed), num_workers=workers, pin_memory=False
    )
    return StudentStream(loader, CPU, seed, AugmentConfig() if augment else None)


def test_a_batch_equals_direct_reads_in_sampler_order(stores) -> None:
    src = source(stores)
    data, labels = open_dataset_store(src.data), open_label_store(src.labels)
    for positions in ([7, 2, 2, 9, 0], [3, 4, 5, 6], [8]):  # shuffled + repeat, contiguous, one
        raw = StoreBatches(src)[np.array(positions)]
        rows = src.indices[positions]
        assert torch.equal(raw.positions, torch.tensor(positions))
        assert np.array_equal(raw.images.numpy(), data.images.oindex[rows])
        assert np.array_equal(raw.masks.numpy(), data.masks.oindex[rows])
        assert np.array_equal(raw.codes.numpy(), labels.read_codes("plc", np.array(positions)))
        assert raw.images.dtype == torch.uint8 and raw.codes.dtype == torch.int8


def test_without_labels_no_codes_are_read(stores) -> None:
    raw = StoreBatches(source(stores, None))[np.array([1, 0])]
    assert raw.codes is None and raw.images.shape[0] == 2


@pytest.fixture
def code_reads(monkeypatch) -> list[int]:
    """The number of images of every ``LabelStore.read_codes`` call from now on (10 images)."""
    calls: list[int] = []
    real = LabelStore.read_codes

    def spy(self, variant, index):
        calls.append(len(np.atleast_1d(np.arange(10)[index])))
        return real(self, variant, index)

    monkeypatch.setattr(LabelStore, "read_codes", spy)
    return calls


def test_runs_join_neighbours_and_small_gaps_only() -> None:
    assert runs(np.array([], dtype=np.int64)) == []
    assert runs(np.array([5])) == [(5, 6)]
    assert runs(np.array([0, 1, 2, 5, 9, 20, 21])) == [(0, 6), (9, 10), (20, 22)]  # gap 2 joins
    assert runs(np.array([0, 4]), max_gap=0) == [(0, 1), (4, 5)]
    index = np.array([1, 2, 4, 8, 9])
    data = np.arange(100, 110)
    assert read_runs(lambda s: data[s], index).tolist() == data[index].tolist()


def test_reads_are_slices_of_one_batch_at_a_time_never_the_whole_variant(
    stores, code_reads, monkeypatch
) -> None:
    kinds: list[type] = []
    real = LabelStore.read_codes
    monkeypatch.setattr(
        LabelStore, "read_codes", lambda self, v, i: kinds.append(type(i)) or real(self, v, i)
    )
    s = stream(stores, "plc")
    batches = [np.unique(b) for b in s.loader.sampler.plan(0)]
    n_batches = sum(1 for _ in s(0))
    assert n_batches == len(batches) == 2 and set(kinds) == {slice}
    expected = [b - a for batch in batches for a, b in runs(batch)]  # one read per run
    assert code_reads == expected and max(code_reads) <= 4 + 2 * MAX_GAP  # batch 4 of 10


def test_a_preloaded_source_serves_the_same_batches_from_one_read(stores, code_reads) -> None:
    streamed = StoreBatches(source(stores))
    held = StoreBatches(dataclasses.replace(source(stores), preload=True))
    for positions in ([7, 2, 2, 9, 0], [3, 4, 5, 6], [8], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]):
        a, b = streamed[np.array(positions)], held[np.array(positions)]
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # streamed: one read per run of each batch's unique images; preloaded: all 10, once
    assert code_reads == [3, 3, 10, 4, 1, 10]  # runs [0, 2] [7, 9] | all 10 | ...
    assert pickle.loads(pickle.dumps(held))._held is None  # a worker preloads its own copy
    with pytest.raises(IndexError):
        held._read(np.array([10]))


def test_the_dataset_pickles_without_zarr_handles(stores) -> None:
    ds = StoreBatches(source(stores))
    ds[np.array([0, 1])]  # opens handles in this process
    assert ds._stores is not None
    blob = pickle.dumps(ds)
    classes = [arg for op, arg, _ in pickletools.genops(blob) if op.name == "SHORT_BINUNICODE"]
    assert "stages.distill.loader" in classes
    assert not any(str(c).startswith(("zarr", "storage_schema")) for c in classes)
    assert pickle.loads(blob)[np.array([1])].images.shape[0] == 1


def test_decode_on_the_device_matches_storage_schema(stores) -> None:
    codes = open_label_store(stores[1]).read_codes("teacher", slice(0, 3))
    ours = decode_codes(torch.from_numpy(codes))
    torch.testing.assert_close(ours, torch.from_numpy(decode_logprobs(codes)), atol=1e-6, rtol=0)


def _epochs(s: StudentStream, epochs: int = 2) -> list[tuple[torch.Tensor, ...]]:
    return [batch for e in range(epochs) for batch in s(e)]


def test_workers_change_nothing(stores) -> None:
    in_process = _epochs(stream(stores, "plc", workers=0))
    with_workers = _epochs(stream(stores, "plc", workers=2))
    assert len(in_process) == len(with_workers) == 4
    for a, b in zip(in_process, with_workers, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.slow
def test_spawned_workers_open_their_own_handles(stores) -> None:
    src = source(stores)
    loader = make_loader(src, plan(len(src.indices)), num_workers=1, pin_memory=False)
    loader.multiprocessing_context = "spawn"  # the dataset is pickled, not forked
    raws = list(loader)
    direct = StoreBatches(src)
    for raw in raws:
        assert torch.equal(raw.codes, direct[raw.positions.numpy()].codes)


def test_paired_design_same_seed_same_order_and_draws_for_every_variant(stores) -> None:
    runs = {v: _epochs(stream(stores, v, seed=3)) for v in (None, "teacher", "plc")}
    for batches in zip(*runs.values(), strict=True):
        first = batches[0]
        for other in batches[1:]:
            assert torch.equal(other[0], first[0]) and torch.equal(other[1], first[1])
    other_seed = _epochs(stream(stores, "plc", seed=4))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(runs["plc"], other_seed, strict=True))
    epoch0, epoch1 = runs["plc"][:2], runs["plc"][2:]
    assert not torch.equal(epoch0[0][0], epoch1[0][0])  # epochs differ


def test_augmented_plc_labels_are_all_correct(stores) -> None:
    strong = AugmentConfig(scale_crop=(0.5, 1.0), rotate_deg=30.0)
    src = source(stores, "plc")
    loader = make_loader(src, plan(len(src.indices), 5), num_workers=0, pin_memory=False)
    s = StudentStream(loader, CPU, 0, strong)
    pixels = 0
    for _images, masks, logp in _epochs(s, 3):
        assert torch.equal(logp.argmax(1), masks)  # 100 % of pixels
        torch.testing.assert_close(logp.exp().sum(1), torch.ones_like(masks, dtype=torch.float))
        pixels += masks.numel()
    assert pixels == 3 * 10 * 32 * 32


def test_unaugmented_batches_are_the_decoded_store(stores) -> None:
    src = source(stores, "teacher")
    (images, masks, logp), *_ = stream(stores, "teacher", augment=False)(0)
    order = next(iter(plan(len(src.indices))(0))).numpy()
    data, labels = open_dataset_store(src.data), open_label_store(src.labels)
    rows = src.indices[order]
    expected = torch.from_numpy(data.images.oindex[rows]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(images, expected, atol=0, rtol=0)
    assert torch.equal(masks, torch.from_numpy(data.masks.oindex[rows]).long())
    torch.testing.assert_close(
        logp, torch.from_numpy(labels.read("teacher", order)), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_a_store_error_in_a_worker_reaches_the_caller_as_its_sentence(
    stores, monkeypatch, workers: int
) -> None:
    sentence = "label store labels.zarr array 'soft/plc' image 'img005': chunk checksum mismatch."

    def corrupt(self, variant, index):
        raise StoreError(sentence)

    monkeypatch.setattr(LabelStore, "read_codes", corrupt)  # forked workers inherit it
    with pytest.raises(StoreError) as info:
        _epochs(stream(stores, "plc", workers=workers), 1)
    assert str(info.value) == sentence


def test_raw_batches_are_named_tuples_that_pin(stores) -> None:
    raw = StoreBatches(source(stores))[np.array([0])]
    assert isinstance(raw, RawBatch) and raw._fields == ("positions", "images", "masks", "codes")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_flipped_bit_in_a_label_shard_stops_the_stream_naming_the_image(
    stores, tmp_path: Path, workers: int
) -> None:
    data, labels = stores
    copy = tmp_path / "labels.zarr"
    shutil.copytree(labels, copy)
    shard = copy / "soft" / "plc" / "c" / "1" / "0" / "0" / "0"  # images 4..7
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 3] ^= 0x10
    shard.write_bytes(bytes(blob))
    src = source((data, copy), "plc")
    loader = make_loader(src, plan(len(src.indices), 10), num_workers=workers, pin_memory=False)
    with pytest.raises(StoreError) as info:
        _epochs(StudentStream(loader, CPU, 0, None), 1)
    message = str(info.value)
    assert "array 'soft/plc'" in message and str(copy) in message
    ids = open_label_store(labels).ids
    assert any(repr(ids[i]) in message for i in range(4, 8))
    assert "\n" not in message and "Traceback" not in message


# ----------------------------------------------------------------- distill reads through it


def _distill(data: Path, labels: Path, out: Path, *extra: str):
    from typer.testing import CliRunner

    from stages.cli import app

    args = ["distill", "--labels", labels, "--data", data, "--out", out, "--student", "unet-tiny"]
    args += ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--device", "cpu"]
    args += ["--allow-weak-teacher"]  # 2 steps: the data path is under test, not the student
    return CliRunner().invoke(app, [str(a) for a in (*args, "--no-progress", *extra)])


@pytest.mark.slow
def test_distill_trains_the_same_student_with_and_without_workers(stores, tmp_path) -> None:
    from pipeline.checkpoint import load_checkpoint

    weights = []
    for workers in ("0", "2"):
        result = _distill(*stores, tmp_path / workers, "--num-workers", workers)
        assert result.exit_code == 0, result.output
        weights.append(torch.load(tmp_path / workers / "student.pt", weights_only=False))
    a, b = (w["state_dict"] for w in weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "0" / "student.pt")["extra"]["history"]


def test_distill_trains_the_same_student_preloaded_or_streamed(stores, tmp_path) -> None:
    weights = []
    for mb in ("0", "512"):  # 0: stream every batch; 512: this split is held in memory
        result = _distill(*stores, tmp_path / mb, "--preload-mb", mb)
        assert result.exit_code == 0, result.output
        weights.append(torch.load(tmp_path / mb / "student.pt", weights_only=False))
    a, b = (w["state_dict"] for w in weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "0" / "curve.csv").read_bytes() == (
        tmp_path / "512" / "curve.csv"
    ).read_bytes()


def test_distill_refuses_a_corrupt_label_chunk_in_one_line(stores, tmp_path) -> None:
    data, labels = stores
    copy = tmp_path / "labels.zarr"
    shutil.copytree(labels, copy)
    for shard in (copy / "soft" / "plc" / "c").rglob("0"):
        if shard.is_file():
            blob = bytearray(shard.read_bytes())
            blob[len(blob) // 2] ^= 0x01
            shard.write_bytes(bytes(blob))
    result = _distill(data, copy, tmp_path / "run", "--num-workers", "2")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "soft/plc" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "run" / "student.pt").exists()


@pytest.mark.slow
def test_distill_over_http_trains_the_same_student(stores, tmp_path) -> None:
    """`plc distill --labels URL --data URL` (loopback HTTP with range requests, worker
    processes reading over HTTP) trains the very student the local paths train."""
    from http_helpers import serve

    data, labels = stores
    assert data.parent == labels.parent
    local = _distill(data, labels, tmp_path / "local", "--num-workers", "2")
    assert local.exit_code == 0, local.output
    with serve(data.parent) as base:
        remote = _distill(
            f"{base}/{data.name}",
            f"{base}/{labels.name}",
            tmp_path / "remote",
            "--num-workers",
            "2",
        )  # type: ignore[arg-type]
    assert remote.exit_code == 0, remote.output
    a, b = (
        torch.load(tmp_path / d / "student.pt", weights_only=False) for d in ("local", "remote")
    )
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    m_local, m_remote = (
        json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("local", "remote")
    )
    assert m_remote["config"]["labels"].startswith("http://127.0.0.1:")
    assert m_remote["dice"] == m_local["dice"]


@pytest.mark.slow
def test_distill_over_a_flaky_server_trains_the_same_student(stores, tmp_path, monkeypatch) -> None:
    """Dropped connections, 503s and truncated responses while `plc distill` streams both
    stores over HTTP: the same weights as from the local paths."""
    from http_helpers import FlakyHandler, serve

    monkeypatch.setenv("PLC_HTTP_RETRY_SECONDS", "30")
    data, labels = stores
    local = _distill(data, labels, tmp_path / "local", "--num-workers", "0", "--preload-mb", "0")
    assert local.exit_code == 0, local.output
    FlakyHandler.reset()
    with serve(data.parent, FlakyHandler) as base:
        remote = _distill(f"{base}/{data.name}", f"{base}/{labels.name}", tmp_path / "remote",
                          "--num-workers", "0", "--preload-mb", "0")  # type: ignore[arg-type]  # fmt: skip
    assert remote.exit_code == 0, remote.output
    assert sum(FlakyHandler.faults.values()) > 0, FlakyHandler.faults
    a, b = (
        torch.load(tmp_path / d / "student.pt", weights_only=False) for d in ("local", "remote")
    )
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("reader", ["direct", "zarr"])
def test_batches_are_the_same_bytes_for_any_chunking_and_read_path(
    stores, tmp_path, monkeypatch, reader: str
) -> None:
    """Stores of 4 images per chunk, read directly or through zarr alone, deliver the very
    batches (same order, same augmentation draws) of the 1-image-per-chunk stores."""
    from loader_stores import make_stores

    from storage_schema.direct import DirectArray

    chunked = make_stores(tmp_path / "k4", chunk_images=4)
    if reader == "zarr":
        monkeypatch.setattr(DirectArray, "of", classmethod(lambda cls, arr, folder: None))
    for variant in ("plc", None):
        want = list(stream(stores, variant)(0))
        got = list(stream(chunked, variant)(0))
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
