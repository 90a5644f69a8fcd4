"""Datasets as host arrays, their training order, and on-device augmentation (spec §7.4).

* ``sources``: CIFAR-10/100 and a synthetic stand-in as validated uint8 arrays (``load_dataset``).
* ``order``: the epoch permutation and padded batches, functions of (seed, epoch) only.
* ``augment``: random crop, Cutout and flip inside the jitted step, per-sample random.

The loading and ordering API is re-exported here: ``from ei_snn_jax import data``.
"""

from ei_snn_jax.data.order import (batch_indices, epoch_batches, epoch_permutation, eval_batches,
                                   num_batches)
from ei_snn_jax.data.sources import (ARRAY_KEYS, COMPACT_FORMAT, DOWNLOAD_MD5, DOWNLOAD_URLS,
                                     IMAGE_SHAPE, NUM_CLASSES, SOURCES, DataError, Dataset,
                                     convert_archive, download_dataset, load_arrays, load_dataset,
                                     load_tfds_arrays, rebuild_cifar10_from_compact,
                                     synthetic_arrays, validate_arrays)
