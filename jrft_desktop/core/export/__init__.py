"""What leaves a run: the vector file (`vector`: save, read, restore) and the merged forms (`merged` for
transformers, `sentence_transformers`, `onnx`, `gguf`), chosen through the registry of forms (`forms`).

The vector file's and the transformers merge's functions are re-exported here, the names callers use most."""

from .merged import (MANIFEST_NAME, check_target, check_transformers, export_merged, max_tokens, merged_copy,
                     merged_stock, stock_model, write_records)
from .vector import (METADATA_KEY, VECTOR_FORMAT, Restored, metadata_sha256, read_vector, restore, save_vector,
                     tensors_sha256, vector_metadata)

__all__ = ["MANIFEST_NAME", "METADATA_KEY", "VECTOR_FORMAT", "Restored", "check_target", "check_transformers",
           "export_merged", "max_tokens", "merged_copy", "merged_stock", "metadata_sha256", "read_vector", "restore",
           "save_vector", "stock_model", "tensors_sha256", "vector_metadata", "write_records"]
