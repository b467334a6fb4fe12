"""Datasets as tensors: the registry in `catalog` (torch-free), readers in `loaders`, splits in `bundle`.

Names are resolved lazily so that importing the catalog for config validation does not import torch.
"""

_BUNDLE = {"DataBundle", "Normalizer", "Split", "load_data", "statistics"}


def __getattr__(name):
    if name in _BUNDLE:
        from dlcli.data import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'dlcli.data' has no attribute {name!r}")
