"""Datasets as host arrays, their training order, and on-device augmentation (spec §7.4).

* ``base``: ``Dataset`` (four host arrays), ``DataError`` and the subset rules.
* ``registry``: dataset name -> ``DatasetSpec`` (classes, stored shape, sources, loader); the
  ``config.data`` options and their check; ``load_dataset``, a lookup in it.
* ``cifar``: CIFAR-10/100 and their synthetic stand-in (arrays, TFDS, official download).
* ``arrays``: user-given ``.npz`` / ``.npy`` image arrays, validated.
* ``tiny_imagenet`` / ``imagenet_augment``: Tiny-ImageNet-200 from its folder (cached uint8
  arrays) and its RandomResizedCrop / ColorJitter / Cutout pipeline on the device.
* ``aedat`` / ``frames`` / ``dvs`` / ``dvs_augment``: AEDAT 3.1 and 2.0 event files,
  spikingjelly's split_by='number' frames, DVS128-Gesture and CIFAR10-DVS with the reference's
  splits and labels, and their 48x48 transforms on the device.
* ``mnist``: MNIST from the IDX files (or TFDS).
* ``folders``: the shared first steps of the datasets read from their own files.
* ``synthetic``: learnable stand-ins shaped like every dataset (offline runs, ``:runlocal``).
* ``cache`` / ``memmap``: ``.npz`` caches written atomically, read or memory-mapped.
* ``order``: the epoch permutation and padded batches, functions of (seed, epoch) only.
* ``augment``: random crop, Cutout and flip inside the jitted step, per-sample random.
* ``transforms``: each dataset's training / evaluation transform, chosen in the training step.
* ``resize``: antialiased bilinear / nearest resampling and RandomResizedCrop boxes as matrices.
* ``placement``: whether a dataset stays on the devices or is streamed from the host (by size).
* ``host_feed``: the host path: the same batches read from (memory-mapped) host arrays and
  uploaded per process by a prefetching thread.

Importing the package registers every dataset (in the order ``registry.dataset_names`` lists
them). The loading and ordering API is re-exported here: ``from ei_snn_jax import data``
(``placement`` and ``host_feed`` import JAX: ``from ei_snn_jax.data import host_feed``).
"""

from ei_snn_jax.data import registry
from ei_snn_jax.data.base import ARRAY_KEYS, DataError, Dataset
from ei_snn_jax.data.registry import SOURCES, DatasetSpec, load_dataset
from ei_snn_jax.data.order import (batch_indices, epoch_batches, epoch_permutation, epoch_table,
                                   eval_batches, num_batches)
# The dataset modules register themselves; this order is the order of dataset_names().
from ei_snn_jax.data.cifar import (DOWNLOAD_MD5, DOWNLOAD_URLS, convert_archive, download_dataset,
                                   load_tfds_arrays, rebuild_cifar10_from_compact)
from ei_snn_jax.data.tiny_imagenet import load_tiny_imagenet
from ei_snn_jax.data.mnist import load_mnist, read_idx
from ei_snn_jax.data.dvs import (CIFAR10_DVS_CLASSES, GESTURE_FOLDERS, cifar10_dvs_split,
                                 frames_folder_name, load_cifar10_dvs, load_dvs128_gesture)
from ei_snn_jax.data.arrays import COMPACT_FORMAT, IMAGE_SHAPE, load_arrays, validate_arrays
from ei_snn_jax.data.aedat import Events, read_aedat2_cifar10dvs, read_aedat3
from ei_snn_jax.data.frames import integrate_by_number, read_frames_npz, split_by_number
from ei_snn_jax.data.synthetic import synthetic_arrays

NUM_CLASSES = registry.num_classes()
