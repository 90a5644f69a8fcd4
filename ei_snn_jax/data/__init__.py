"""Datasets as host arrays, their training order, and on-device augmentation (spec §7.4).

* ``sources``: CIFAR-10/100 and a synthetic stand-in as validated uint8 arrays (``load_dataset``).
* ``order``: the epoch permutation and padded batches, functions of (seed, epoch) only.
* ``augment``: random crop, Cutout and flip inside the jitted step, per-sample random.
* ``tiny_imagenet`` / ``imagenet_augment``: Tiny-ImageNet-200 from its folder (cached uint8
  arrays) and its RandomResizedCrop / ColorJitter / Cutout pipeline on the device.
* ``aedat`` / ``frames`` / ``dvs`` / ``dvs_augment``: AEDAT 3.1 and 2.0 event files,
  spikingjelly's split_by='number' frames, DVS128-Gesture and CIFAR10-DVS with the reference's
  splits and labels, and their 48x48 transforms on the device.
* ``mnist``: MNIST from the IDX files (or TFDS).
* ``folders``: ``load_dataset`` for those four datasets (data.source folder/auto/tfds/synthetic).
* ``synthetic``: learnable stand-ins shaped like every dataset (offline runs, ``:runlocal``).
* ``transforms``: each dataset's training / evaluation transform, chosen in the training step.
* ``resize``: antialiased bilinear / nearest resampling and RandomResizedCrop boxes as matrices.
* ``placement``: whether a dataset stays on the devices or is streamed from the host (by size).
* ``host_feed``: the host path: the same batches read from (memory-mapped) host arrays and
  uploaded per process by a prefetching thread.

The loading and ordering API is re-exported here: ``from ei_snn_jax import data``
(``placement`` and ``host_feed`` import JAX: ``from ei_snn_jax.data import host_feed``).
"""

from ei_snn_jax.data.order import (batch_indices, epoch_batches, epoch_permutation, epoch_table,
                                   eval_batches, num_batches)
from ei_snn_jax.data.sources import (ARRAY_KEYS, COMPACT_FORMAT, DOWNLOAD_MD5, DOWNLOAD_URLS,
                                     IMAGE_SHAPE, NUM_CLASSES, SOURCES, DataError, Dataset,
                                     convert_archive, download_dataset, load_arrays, load_dataset,
                                     load_tfds_arrays, rebuild_cifar10_from_compact,
                                     synthetic_arrays, validate_arrays)
from ei_snn_jax.data.aedat import Events, read_aedat2_cifar10dvs, read_aedat3
from ei_snn_jax.data.dvs import (CIFAR10_DVS_CLASSES, GESTURE_FOLDERS, cifar10_dvs_split,
                                 frames_folder_name, load_cifar10_dvs, load_dvs128_gesture)
from ei_snn_jax.data.frames import integrate_by_number, read_frames_npz, split_by_number
from ei_snn_jax.data.mnist import load_mnist, read_idx
from ei_snn_jax.data.tiny_imagenet import load_tiny_imagenet
