"""Datasets, registered by name in :data:`DATASETS`. Every module here is imported."""

from ..plugins import import_submodules
from .base import DATASETS, DatasetSplits, Split, load_dataset, stratified_split

import_submodules(__name__, __path__)

__all__ = ["DATASETS", "DatasetSplits", "Split", "load_dataset", "stratified_split"]
