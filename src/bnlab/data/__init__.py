"""Datasets: embedded, local files and downloads, as :class:`Dataset` tensors.

``load(name, **options)`` returns float32 images in NCHW (or tabular ``(N, F)``) and int64
labels; ``datasets()`` lists the names, ``describe()`` gives one line each (names and the
``format:PATH`` forms), ``dataset_options(name)`` the options a dataset accepts. See
:mod:`bnlab.data.registry` for the pixel-scale defaults, :mod:`bnlab.data.options` for
slicing and validation splits, :mod:`bnlab.data.named` for where named datasets are found.
"""

from bnlab.data.dataset import Dataset
from bnlab.data.registry import dataset_options, datasets, describe, load

__all__ = ["Dataset", "dataset_options", "datasets", "describe", "load"]
