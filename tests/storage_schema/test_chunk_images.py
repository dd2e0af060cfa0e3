"""Several images per inner chunk (``chunk_images``): the same values through zarr and the
direct reader, the layout recorded, a corrupt chunk naming all its images, bad counts refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from label_helpers import IDS, SHARD, VARS, N, create, soft_maps, write_all

from storage_schema import (
    StoreError,
    decode_logprobs,
    encode_logprobs,
    open_dataset_store,
    open_label_store,
)
from storage_schema.direct import DirectArray


@pytest.mark.parametrize("k", [1, 3])
def test_a_label_store_of_k_images_per_chunk_reads_the_same_codes(tmp_path: Path, k) -> None:
    maps = soft_maps()
    path = write_all(tmp_path / f"l{k}.zarr", maps, chunk_images=k)
    store = open_label_store(path)
    arr = zarr.open_array(str(path / "soft" / VARS[0]), mode="r")
    assert arr.chunks[0] == k and arr.shards[0] == SHARD
    assert store.attrs.get("chunk_images", 1) == k  # recorded only when not 1
    assert ("chunk_images" in store.attrs) == (k != 1)
    for v in VARS:
        want = encode_logprobs(maps[v], axis=1)
        assert np.array_equal(store.read_codes(v, slice(None)), want)
        assert np.array_equal(store.read_codes(v, slice(2, 6)), want[2:6])
        assert np.array_equal(store.read_codes(v, np.array([0, 5])), want[[0, 5]])
        assert np.allclose(store.read(v, 4), decode_logprobs(want[4], axis=0))
    assert isinstance(store._direct[f"soft/{VARS[0]}"], DirectArray)


def test_a_corrupt_chunk_of_three_images_names_all_three(tmp_path: Path) -> None:
    from storage_schema import verify_store

    path = write_all(tmp_path / "l.zarr", soft_maps(), chunk_images=3)
    shard = path / "soft" / VARS[1] / "c" / "1" / "0" / "0" / "0"  # images 3, 4, 5
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x04  # inside the shard's only chunk
    shard.write_bytes(bytes(data))
    store = open_label_store(path)

    def named(index) -> set[str]:
        with pytest.raises(StoreError) as err:
            store.read_codes(VARS[1], index)
        assert "crc32c checksum mismatch" in str(err.value)
        return set(re.findall(r"'(img\d)'", str(err.value).split("at image(s) ")[1].split(":")[0]))

    assert named(4) == {IDS[4]}  # the image asked for
    assert named(slice(None)) == {IDS[3], IDS[4], IDS[5]}  # every image the chunk holds
    with pytest.raises(StoreError) as err:
        verify_store(path)
    assert "3 image(s) unreadable" in str(err.value)
    assert store.read_codes(VARS[0], 4).shape == (2, 5, 4)  # the other variant reads


def test_chunk_images_must_divide_the_shard(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"chunk_images \(2\) must divide shard_size \(3\)"):
        create(tmp_path / "l.zarr", chunk_images=2)


def test_resuming_with_another_chunk_count_is_refused(tmp_path: Path) -> None:
    writer = create(tmp_path / "l.zarr", chunk_images=3)
    writer.write_shard(0, {v: m[:SHARD] for v, m in soft_maps().items()},
                       {"dice": np.zeros(SHARD)})  # fmt: skip
    with pytest.raises(StoreError, match="its chunk_images is 3 but this run has 1"):
        create(tmp_path / "l.zarr", resume=True)
    assert len(create(tmp_path / "l.zarr", resume=True, chunk_images=3).pending_shards()) == 2


def test_a_dataset_store_of_k_images_per_chunk(tmp_path: Path, make_dataset, arrays) -> None:
    images, masks = arrays
    path = make_dataset(tmp_path / "d.zarr", chunk_images=4, shard_size=8)
    store = open_dataset_store(path)
    raw = zarr.open_array(str(path / "images"), mode="r")
    assert raw.chunks[0] == 4 and store.attrs["chunk_images"] == 4
    assert np.array_equal(store.read_images(slice(None)), images)
    assert np.array_equal(store.read_masks(slice(1, len(masks))), masks[1:])
    assert np.array_equal(store.read_images(np.array([0, 2])), images[[0, 2]])
    with pytest.raises(StoreError, match=r"chunk_images \(3\) must divide shard_size \(8\)"):
        make_dataset(tmp_path / "e.zarr", chunk_images=3, shard_size=8)
    assert N < 8  # the one shard holds every image: shards cover whole chunks past the end
