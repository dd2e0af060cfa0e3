"""The package's public surface and its dependency promise (no torch)."""

from __future__ import annotations

import subprocess
import sys

import storage_schema


def test_import_does_not_pull_in_torch() -> None:
    code = (
        "import sys, storage_schema\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'dask', 'cv2'})\n"
        "assert not bad, bad\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_names() -> None:
    expected = {
        "StoreError", "LOGP_SCALE", "encode_logprobs", "decode_logprobs", "encoding_error",
        "MANIFEST_SCHEMA", "build_manifest", "manifest_sha256", "DATASET_SCHEMA",
        "DATASET_SCHEMA_VERSION", "write_dataset_store", "DatasetStore", "open_dataset_store",
        "LABEL_SCHEMA", "LABEL_SCHEMA_VERSION", "create_label_store",
        "LabelStoreWriter", "LabelStore", "open_label_store", "verify_store", "format_summary",
    }  # fmt: skip
    assert expected <= set(storage_schema.__all__)
    assert all(hasattr(storage_schema, name) for name in storage_schema.__all__)
