"""On-disk contracts of plc-kd: the prepared dataset store, the label store, the manifest.

Depends on numpy, zarr (v3 format) and pyarrow only, so any student codebase can read a
store with it. Every open validates the schema name and version.
"""

from storage_schema.dataset_store import (
    DATASET_SCHEMA,
    DATASET_SCHEMA_VERSION,
    DatasetStore,
    open_dataset_store,
    write_dataset_store,
)
from storage_schema.encoding import (
    LOGP_SCALE,
    decode_logprobs,
    encode_logprobs,
    encoding_error,
)
from storage_schema.errors import StoreError
from storage_schema.label_store import (
    LABEL_SCHEMA,
    LABEL_SCHEMA_VERSION,
    LabelStore,
    LabelStoreWriter,
    create_label_store,
    open_label_store,
)
from storage_schema.manifest import MANIFEST_SCHEMA, SPLITS, build_manifest, manifest_sha256
from storage_schema.verify import format_summary, verify_store

__all__ = [
    "DATASET_SCHEMA",
    "DATASET_SCHEMA_VERSION",
    "LABEL_SCHEMA",
    "LABEL_SCHEMA_VERSION",
    "LOGP_SCALE",
    "MANIFEST_SCHEMA",
    "SPLITS",
    "DatasetStore",
    "LabelStore",
    "LabelStoreWriter",
    "StoreError",
    "build_manifest",
    "create_label_store",
    "decode_logprobs",
    "encode_logprobs",
    "encoding_error",
    "format_summary",
    "manifest_sha256",
    "open_dataset_store",
    "open_label_store",
    "verify_store",
    "write_dataset_store",
]
