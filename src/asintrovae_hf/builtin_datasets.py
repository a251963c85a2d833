"""The built-in datasets under the import path the shipped classifiers' metadata and the published model cards record
(`asintrovae_hf.builtin_datasets.split_indices`); they live in [`asintrovae_hf.data.builtin`]."""

from .data.builtin import (  # noqa: F401
    BUILTIN_DATASETS,
    SPLITS,
    BuiltinDataset,
    get_builtin_dataset,
    load_builtin_arrays,
    load_builtin_dataset,
    split_indices,
    split_record,
    to_uint8,
)
