"""Hostile raw files into `plc prepare`: one message listing every bad file, exit 1, nothing written.

Each hypothesis example builds a tiny ``folder`` tree in which every pair is either good (in
one of several legitimate encodings: 8-bit PNG, 16-bit and float TIFF, gray, RGBA) or carries
one fault, runs the real CLI on it and checks the outcome against what the faults predict:
the set of files the error lists is exactly the set of bad files, each with its reason.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_files import bmp_declaring, jpeg_declaring, png_declaring, tiff_bytes
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from stages.cli import app
from stages.outputs import unwritable
from stages.prepare.config import PrepareConfig
from stages.prepare.readers import imageio
from stages.prepare.readers.headers import MAX_PIXELS, declared
from stages.prepare.readers.imageio import (
    ReadError,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)
from stages.prepare.stage import run as run_prepare
from storage_schema import open_dataset_store

Expected = dict[Path, str]  # bad file -> regex its reason must match
Fault = Callable[[Path, str, int, int, np.random.Generator], Expected]


# ---------------------------------------------------------------- headers


def _encoded(ext: str, array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    ext=st.sampled_from([".png", ".jpg", ".bmp", ".tif"]),
    channels=st.sampled_from([1, 3, 4]),
)
def test_declared_size_matches_pillow(width: int, height: int, ext: str, channels: int) -> None:
    if ext in (".jpg", ".bmp") and channels == 4:
        channels = 3  # neither format stores alpha through OpenCV
    shape = (height, width) if channels == 1 else (height, width, channels)
    data = _encoded(ext, np.zeros(shape, np.uint8))
    found = declared(data)
    with Image.open(io.BytesIO(data)) as img:  # the independent oracle
        assert found is not None and (found.width, found.height) == img.size
        if ext != ".bmp" and found.channels is not None:
            assert found.channels == len(img.getbands())


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (lambda w, h: png_declaring(w, h), "png"),
        (lambda w, h: jpeg_declaring(w, h), "jpeg"),
        (bmp_declaring, "bmp"),
        (lambda w, h: tiff_bytes(np.zeros((4, 4), np.uint8), width=w, height=h), "tiff"),
    ],
)
def test_huge_declared_size_is_refused_before_any_decoder_runs(
    make: Callable[[int, int], bytes], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a decoder ran on a {fmt} declaring 60000×60000 pixels")

    monkeypatch.setattr(imageio.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(imageio, "_decode_pillow", no_decoding)
    monkeypatch.setattr(imageio, "_confirm_with_pillow", no_decoding)
    data = make(60_000, 60_000)
    assert len(data) < 400  # a few hundred bytes declaring 3.6 GP
    for reader in (read_image, read_mask):
        with pytest.raises(ReadError, match=r"declares 60000×60000 pixels .*MAX_PIXELS"):
            reader(data)


def test_size_just_under_the_limit_is_not_refused_by_the_header_check() -> None:
    side = int(MAX_PIXELS**0.5)
    with pytest.raises(ReadError) as err:  # refused by the decoder (no pixel data), not the limit
        read_image(png_declaring(side, side))
    assert "MAX_PIXELS" not in str(err.value)


# ---------------------------------------------------------------- faults and good encodings


def _png(path: Path, array: np.ndarray) -> None:
    path.write_bytes(_encoded(".png", array))


def _gradient_mask(h: int, w: int) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))


def _photo(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blob(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4 + 1, w // 4 : 3 * w // 4 + 1] = 1
    return mask


def good(kind: str) -> Fault:
    """A legitimate pair in one of several encodings; nothing is expected to be reported."""

    def make(root: Path, stem: str, h: int, w: int, rng: np.random.Generator) -> Expected:
        image, mask = root / "images" / stem, root / "masks" / stem
        rgb, fg = _photo(h, w, rng), _blob(h, w)
        bgr = rgb[..., ::-1]  # OpenCV writes BGR(A)
        if kind == "png8":
            _png(image.with_suffix(".png"), bgr)
            _png(mask.with_suffix(".png"), fg * 255)
        elif kind == "tiff16":
            image.with_suffix(".tif").write_bytes(tiff_bytes(rgb.astype(np.uint16) * 257))
            mask.with_suffix(".tif").write_bytes(tiff_bytes(fg.astype(np.uint16) * 65535))
        elif kind == "float":
            image.with_suffix(".tif").write_bytes(tiff_bytes((rgb / 255).astype(np.float32)))
            mask.with_suffix(".tif").write_bytes(tiff_bytes(fg.astype(np.float32)))
        elif kind == "gray_rgba":
            _png(image.with_suffix(".png"), np.dstack([bgr, np.full((h, w), 255, np.uint8)]))
            _png(mask.with_suffix(".png"), fg)  # 0/1
        return {}

    return make


def _pair(root: Path, stem: str, h: int, w: int, rng: np.random.Generator) -> tuple[Path, Path]:
    """Write a good 8-bit pair; return (image, mask) paths for a fault to spoil one of them."""
    image, mask = root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png"
    _png(image, _photo(h, w, rng))  # its colours are not checked
    _png(mask, _blob(h, w) * 255)
    return image, mask


def replaced(side: str, reason: str, content: Callable[[int, int], bytes], ext: str) -> Fault:
    """A pair whose image (``side='image'``) or mask is replaced by ``content(h, w)``."""

    def make(root: Path, stem: str, h: int, w: int, rng: np.random.Generator) -> Expected:
        image, mask = _pair(root, stem, h, w, rng)
        target = image if side == "image" else mask
        target.unlink()
        target = target.with_suffix(ext)
        target.write_bytes(content(h, w))
        return {target: reason}

    return make


def truncated(side: str, ext: str, keep: float) -> Fault:
    def content(h: int, w: int) -> bytes:
        rng = np.random.default_rng(h * w)
        array = _photo(h, w, rng) if side == "image" else _blob(h, w) * 255
        data = tiff_bytes(array) if ext == ".tif" else _encoded(ext, array)
        return data[: max(1, int(len(data) * keep))]

    return replaced(side, "truncated|corrupt|file is empty", content, ext)


def linked(side: str, how: str) -> Fault:
    """The image or mask name is a symlink loop, a broken symlink or a FIFO."""
    reasons = {"loop": "symlink loop", "broken": "broken symlink", "fifo": "not a regular file"}
    partner = {"image": "mask has no image", "mask": "image has no mask"}

    def make(root: Path, stem: str, h: int, w: int, rng: np.random.Generator) -> Expected:
        image, mask = _pair(root, stem, h, w, rng)
        target, other = (image, mask) if side == "image" else (mask, image)
        target.unlink()
        if how == "loop":
            hop = target.with_name(f"{stem}_hop.txt")  # not an image name: only the loop is
            hop.symlink_to(target.name)
            target.symlink_to(hop.name)
        elif how == "broken":
            target.symlink_to(f"{stem}_gone.png")
        else:
            os.mkfifo(target)
        return {target: reasons[how], other: partner[side]}

    return make


def mask_of_other_size(root: Path, stem: str, h: int, w: int, rng: np.random.Generator) -> Expected:
    _, mask = _pair(root, stem, h, w, rng)
    _png(mask, _blob(h + 3, w) * 255)
    return {mask: rf"mask is {w}×{h + 3} but its image is {w}×{h} \(W×H\)"}


HUGE = 50_000  # 2.5 GP declared; a few hundred bytes on disk
LIMIT = r"declares \d+×\d+ pixels .* over the limit .*MAX_PIXELS"


def _nan_tiff(h: int, w: int) -> bytes:
    array = np.zeros((h, w), np.float32)
    array[h // 2, w // 2] = np.nan
    return tiff_bytes(array)


def _inf_tiff(h: int, w: int) -> bytes:
    array = np.zeros((h, w, 3), np.float32)
    array[0, 0, 1] = np.inf
    return tiff_bytes(array)


FAULTS: dict[str, Fault] = {
    "good_png8": good("png8"),
    "good_tiff16": good("tiff16"),
    "good_float": good("float"),
    "good_gray_rgba": good("gray_rgba"),
    "image_empty": replaced("image", "file is empty", lambda h, w: b"", ".png"),
    "mask_empty": replaced("mask", "file is empty", lambda h, w: b"", ".png"),
    "image_garbage": replaced(
        "image", "unreadable or corrupt", lambda h, w: os.urandom(64), ".jpg"
    ),
    "image_huge_png": replaced("image", LIMIT, lambda h, w: png_declaring(HUGE, HUGE), ".png"),
    "image_huge_jpeg": replaced("image", LIMIT, lambda h, w: jpeg_declaring(HUGE, HUGE), ".jpg"),
    "mask_huge_bmp": replaced("mask", LIMIT, lambda h, w: bmp_declaring(HUGE, -HUGE), ".bmp"),
    "mask_huge_tiff": replaced(
        "mask", LIMIT, lambda h, w: tiff_bytes(_blob(h, w), width=HUGE, height=HUGE), ".tif"
    ),
    "image_5_channels": replaced(
        "image",
        "declares 5 channels",
        lambda h, w: tiff_bytes(np.zeros((h, w, 5), np.uint8)),
        ".tif",
    ),
    "mask_7_channels": replaced(
        "mask",
        "declares 7 channels",
        lambda h, w: tiff_bytes(np.zeros((h, w, 7), np.uint16)),
        ".tif",
    ),
    "image_nan": replaced("image", r"not finite \(1 NaN, 0 infinite\)", _nan_tiff, ".tif"),
    "image_inf": replaced("image", r"not finite \(0 NaN, 1 infinite\)", _inf_tiff, ".tif"),
    "mask_nan": replaced("mask", r"mask float32 pixel values not finite", _nan_tiff, ".tif"),
    "image_float_out_of_range": replaced(
        "image",
        "unsupported pixel type float32",
        lambda h, w: tiff_bytes(np.full((h, w), 255.0, np.float32)),
        ".tif",
    ),
    "mask_negative": replaced(
        "mask", "negative values", lambda h, w: tiff_bytes(np.full((h, w), -1, np.int16)), ".tif"
    ),
    "mask_gradient": replaced(
        "mask",
        "non-binary mask values",
        lambda h, w: _encoded(".png", _gradient_mask(h, w)),
        ".png",
    ),
    "mask_class_ids": replaced(
        "mask", "looks like class indices", lambda h, w: _encoded(".png", _blob(h, w) * 3), ".png"
    ),
    "mask_other_size": mask_of_other_size,
    "image_truncated_png": truncated("image", ".png", 0.5),
    "image_truncated_jpg": truncated("image", ".jpg", 0.7),
    "mask_truncated_bmp": truncated("mask", ".bmp", 0.3),
    "image_truncated_tiff": truncated("image", ".tif", 0.6),
    "image_symlink_loop": linked("image", "loop"),
    "mask_symlink_loop": linked("mask", "loop"),
    "mask_broken_symlink": linked("mask", "broken"),
    "image_fifo": linked("image", "fifo"),
}


# ---------------------------------------------------------------- through the real CLI


def prepare_cli(root: Path, out: Path, *extra: str) -> tuple[int, str, BaseException | None]:
    """``plc prepare --dataset folder`` in-process: (exit code, stdout + stderr, exception)."""
    args = ["prepare", "--dataset", "folder", "--root", str(root), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--size", "32", "--no-progress", *extra])
    crash = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, crash


def listed_problems(output: str) -> dict[Path, str]:
    """The ``  - <path>: <reason>`` lines of a DatasetError message."""
    found = {}
    for line in output.splitlines():
        if match := re.match(r"^\s+- (/.+?): (.+)$", line):
            found[Path(match[1])] = match[2]
    return found


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(out.name)]
    assert leftovers == [], f"half-written output left behind: {leftovers}"


def assert_refused(code: int, output: str, crash: BaseException | None, expected: Expected) -> None:
    assert crash is None, f"crashed instead of a message: {crash!r}"
    assert code == 1
    assert "Traceback" not in output
    assert output.count("error:") == 1, output
    found = listed_problems(output)
    assert set(found) == set(expected), output
    for path, reason in expected.items():
        assert re.search(reason, found[path]), f"{path}: {found[path]!r} !~ {reason!r}"


@settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    faults=st.lists(st.sampled_from(sorted(FAULTS)), min_size=2, max_size=5),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    seed=st.integers(0, 2**16),
)
def test_hostile_files_are_all_listed_and_nothing_is_written(
    faults: list[str], h: int, w: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp, "raw"), Path(tmp, "stores", "ds.zarr")
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        out.parent.mkdir()
        expected: Expected = {}
        for index, name in enumerate(faults):
            rng = np.random.default_rng([seed, index])
            expected |= FAULTS[name](root, f"p{index:02d}", h, w, rng)
        code, output, crash = prepare_cli(root, out)
        if expected:
            assert_refused(code, output, crash, expected)
            assert_nothing_written(out)
        else:  # only good pairs, in various encodings: all decode to the same pixels
            assert (code, crash) == (0, None), output
            store = open_dataset_store(out)
            for index in range(len(faults)):
                rgb = _photo(h, w, np.random.default_rng([seed, index]))
                np.testing.assert_array_equal(store.images[index], resize_image(rgb, 32))
                np.testing.assert_array_equal(store.masks[index], resize_mask(_blob(h, w), 32))


def test_hostile_files_through_a_real_process(tmp_path: Path) -> None:
    """The same refusal from the installed ``plc`` in its own process (no test harness)."""
    root, out = tmp_path / "raw", tmp_path / "ds.zarr"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    expected = FAULTS["image_huge_png"](root, "a", 16, 16, rng)
    expected |= FAULTS["mask_nan"](root, "b", 16, 16, rng)
    expected |= FAULTS["image_symlink_loop"](root, "c", 16, 16, rng)
    FAULTS["good_png8"](root, "d", 16, 16, rng)
    proc = _plc(
        "prepare",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        "32",
        "--no-progress",
    )
    assert_refused(proc.returncode, proc.stdout + proc.stderr, None, expected)
    assert proc.stdout == ""
    assert_nothing_written(out)


def _plc(*args: str, wrap: Sequence[str] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed ``plc`` (optionally under a wrapper command such as setpriv)."""
    plc = Path(sys.executable).with_name("plc")
    return subprocess.run(
        [*wrap, str(plc), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


# ---------------------------------------------------------------- permissions


def test_unreadable_files_and_folders_are_listed(tmp_path: Path) -> None:
    """chmod 000 does not stop root: as root, ``plc`` runs without the capabilities that let
    root ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), via ``setpriv``."""
    as_root = os.geteuid() == 0
    setpriv = shutil.which("setpriv")
    if as_root and setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is absent: chmod 000 cannot bite")
    root, out = tmp_path / "raw", tmp_path / "ds.zarr"
    for sub in ("images", "masks", "ood_negatives/images"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    image, _ = _pair(root, "locked", 16, 16, rng)
    _pair(root, "fine", 16, 16, rng)
    _png(root / "ood_negatives" / "images" / "n.png", _photo(16, 16, rng))
    image.chmod(0o000)
    (root / "ood_negatives" / "images").chmod(0o000)
    drop = [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if as_root else []
    try:
        proc = _plc(
            *("prepare", "--dataset", "folder", "--root", str(root), "--out", str(out)),
            *("--size", "32", "--no-progress", "--include-negatives"),
            wrap=drop,
        )
    finally:
        image.chmod(0o644)
        (root / "ood_negatives" / "images").chmod(0o755)
    if "Operation not permitted" in proc.stderr and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    expected = {
        image: r"cannot read file \(Permission denied\)",
        root / "ood_negatives" / "images": r"cannot list folder \(Permission denied\)",
    }
    assert_refused(proc.returncode, proc.stderr, None, expected)
    assert_nothing_written(out)


# ---------------------------------------------------------------- full disk, unwritable --out


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (skips the test where mounting is refused)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (relative name -> SHA-256 of its bytes)."""
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _synthetic(out: Path, count: int, size: int, *extra: str) -> subprocess.CompletedProcess:
    return _plc(
        *("prepare", "--dataset", "synthetic", "--out", str(out), "--count", str(count)),
        *("--size", str(size), "--no-progress", *extra),
    )


def _store(out: Path, count: int, size: int) -> dict[str, str]:
    """A small synthetic store written in-process (quick); its files' digests."""
    run_prepare(PrepareConfig("synthetic", out, count=count, size=size, progress=False))
    return tree_digest(out)


def test_full_disk_clear_error_and_the_previous_store_intact(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "256k") as disk:
        out = disk / "ds.zarr"
        before = _store(out, 4, 32)
        proc = _synthetic(out, 24, 128, "--overwrite")  # ~0.5 MB compressed: cannot fit
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        message = proc.stderr.strip().splitlines()[-1]
        assert message == (
            f"error: cannot write {out}: no space left on {disk}. Nothing was published; the "
            f"previous store at {out} is unchanged; free space or fix the folder, or pass "
            "another --out."
        )
        assert tree_digest(out) == before
        assert len(open_dataset_store(out).ids()) == 4
        assert sorted(p.name for p in disk.iterdir()) == ["ds.zarr"]  # no temporary left


def test_full_disk_first_write_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as disk:
        proc = _synthetic(disk / "ds.zarr", 24, 128)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert f"no space left on {disk}. Nothing was published;" in proc.stderr
        assert list(disk.iterdir()) == []


def test_read_only_out_is_refused_before_any_work(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m") as disk:
        out = disk / "ds.zarr"
        before = _store(out, 4, 32)
        remount = ["mount", "-o", "remount,ro", str(disk)]
        assert subprocess.run(remount, check=False).returncode == 0
        proc = _synthetic(out, 6, 32, "--overwrite")
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        assert f"error: cannot write {out}: {disk} is mounted read-only; pass another --out." in (
            proc.stderr
        )
        assert "preparing" not in proc.stderr  # refused before generating or reading anything
        assert tree_digest(out) == before


def test_out_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    for out in (blocker / "ds.zarr", blocker / "deeper" / "ds.zarr"):
        args = ["prepare", "--dataset", "synthetic", "--out", str(out), "--count", "4"]
        result = CliRunner().invoke(app, [*args, "--size", "32", "--no-progress"])
        assert result.exit_code == 1
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        )
        assert f"error: cannot write {out}: {blocker} is a file, not a folder" in result.output
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "no space left on /"),
        (errno.EROFS, "/ is mounted read-only"),
        (errno.EIO, "Input/output error (/x/ds.zarr/zarr.json)"),
    ],
)
def test_write_errors_become_one_sentence(code: int, reason: str) -> None:
    err = OSError(code, os.strerror(code), "/x/ds.zarr/zarr.json")
    message = str(unwritable(err, Path("/x/ds.zarr"), existed=False))
    assert message == (
        f"cannot write /x/ds.zarr: {reason}. Nothing was published; free space or fix the "
        "folder, or pass another --out."
    )


def test_label_store_write_onto_a_full_disk_keeps_the_published_store(tmp_path: Path) -> None:
    """The label writer on a full disk: ENOSPC surfaces, the unfinished store stays
    ``<path>.writing`` (status ``writing``: resumable, never read as complete), and the
    previously published store at ``path`` is untouched."""
    from label_helpers import create, soft_maps, write_all

    from storage_schema import open_label_store

    with tmpfs(tmp_path / "small", "256k") as disk:
        path = disk / "labels.zarr"
        write_all(path, soft_maps(0))
        before = tree_digest(path)
        n, side = 24, 96  # 24 × 2 × 96² int8 codes of random log-probs: ~440 kB, cannot fit
        writer = create(
            path, ids=[f"big{i}" for i in range(n)], height=side, width=side,
            shard_size=8, overwrite=True,
        )  # fmt: skip
        rng = np.random.default_rng(0)
        logits = rng.normal(scale=3, size=(8, 2, side, side))
        log_p = (logits - np.logaddexp(logits[:, :1], logits[:, 1:])).astype(np.float32)
        with pytest.raises(OSError) as err:
            for start, _ in writer.shard_bounds():
                writer.write_shard(start, {"teacher": log_p, "plc": log_p})
            writer.publish()
        assert err.value.errno == errno.ENOSPC
        assert tree_digest(path) == before
        assert open_label_store(path).attrs["status"] == "complete"
        assert len(open_label_store(path).ids) == 7
        unfinished = json.loads((disk / "labels.zarr.writing" / "zarr.json").read_text())
        assert unfinished["attributes"]["status"] == "writing"
        assert f"no space left on {disk}." in str(unwritable(err.value, path, existed=True))


@pytest.mark.slow
def test_precompute_onto_a_full_disk_is_one_message(tmp_path: Path) -> None:
    """``plc precompute`` (a random-init tiny team) writing its label store onto a full tmpfs."""
    from precompute_inputs import make_inputs, precompute_args

    inputs = make_inputs(tmp_path / "inputs")
    with tmpfs(tmp_path / "small", "64k") as disk:
        out = disk / "labels.zarr"
        result = CliRunner().invoke(app, precompute_args(inputs, out))
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit
        ), repr(result.exception)
        assert result.exit_code == 1
        assert "Traceback" not in result.output
        assert result.output.count("error:") == 1
        assert re.search(
            rf"error: cannot write {disk}/\S*: no space left on {disk}\.", result.output
        )
        assert not out.exists()  # nothing published; the unfinished store is <out>.writing
