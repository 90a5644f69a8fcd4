"""On-device CIFAR training augmentation, jittable and vmapped (spec §7.4).

The reference pipeline, per training image and in this order:

  1. RandomCrop(32, padding=4): zero padding, offsets (dy, dx) uniform in [0, 8] inclusive;
  2. torchtoolbox 0.1.8.2 ``Cutout()`` (random erasing): with p = 0.5, area
     s ~ U(0.02, 0.4) * H * W, aspect r ~ U(0.4, 2.5), w = int(sqrt(s / r)),
     h = int(sqrt(s * r)), left ~ randint[0, W - w], top ~ randint[0, H - h], one fill value
     c ~ randint[0, 255]; pasted into the PIL RGB image this writes (c, 0, 0) ("red", the
     faithful default); "grey" writes (c, c, c);
  3. RandomHorizontalFlip(0.5);
  4. ToTensor: x / 255 as float32 in [0, 1], no normalisation.

Every example gets its own key (the batch key split B ways). Shapes are static: the cutout is a
mask, the crop a ``dynamic_slice``. The test set only gets ``to_float``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ei_snn_jax.data.registry import CUTOUT_FILLS

Array = jax.Array

CROP_PADDING = 4
CUTOUT_P = 0.5
CUTOUT_SCALE = (0.02, 0.4)
CUTOUT_RATIO = (0.4, 1.0 / 0.4)
FLIP_P = 0.5


def check_cutout_fill(cutout_fill: str) -> str:
  """Validate ``data.cutout_fill`` (spec §7.4: "red" faithful, "grey" option)."""
  if cutout_fill not in CUTOUT_FILLS:
    raise ValueError(f"cutout_fill must be one of {CUTOUT_FILLS} (data.cutout_fill), got "
                     f"{cutout_fill!r}")
  return cutout_fill


# k / 255 correctly rounded (IEEE division, as torch's ToTensor computes it); XLA would turn
# x / 255 into x * (1 / 255), which is off by one ulp for some k.
_UINT8_TO_FLOAT = np.arange(256, dtype=np.float32) / np.float32(255.0)


def to_float(images: Array) -> Array:
  """uint8 images -> float32 k/255 in [0, 1] (ToTensor, spec §7.4; the test-set transform)."""
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise TypeError(f"to_float expects uint8 images (0..255), got {images.dtype}")
  return jnp.asarray(_UINT8_TO_FLOAT)[images.astype(jnp.int32)]


# --------------------------------------------------------------------------------------------
# One example (key, image (H, W, C)) -> image of the same dtype
# --------------------------------------------------------------------------------------------


def _crop_one(key: Array, image: Array, padding: int) -> Array:
  h, w, c = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (), 0, 2 * padding + 1)
  dx = jax.random.randint(kx, (), 0, 2 * padding + 1)
  return jax.lax.dynamic_slice(padded, (dy, dx, jnp.zeros((), dy.dtype)), (h, w, c))


def cutout_params(key: Array, height: int, width: int) -> tuple[Array, ...]:
  """Draw one torchtoolbox Cutout rectangle (spec §7.4): (apply, top, left, h, w, c).

  ``apply`` is the p = 0.5 coin; h and w are int32 and clamped to the image; c is the fill
  value in [0, 255].
  """
  k_apply, k_s, k_r, k_left, k_top, k_c = jax.random.split(key, 6)
  apply = jax.random.uniform(k_apply, ()) < CUTOUT_P
  s = jax.random.uniform(k_s, (), jnp.float32, *CUTOUT_SCALE) * (height * width)
  r = jax.random.uniform(k_r, (), jnp.float32, *CUTOUT_RATIO)
  w = jnp.clip(jnp.floor(jnp.sqrt(s / r)).astype(jnp.int32), 0, width)
  h = jnp.clip(jnp.floor(jnp.sqrt(s * r)).astype(jnp.int32), 0, height)
  left = jax.random.randint(k_left, (), 0, width - w + 1)
  top = jax.random.randint(k_top, (), 0, height - h + 1)
  c = jax.random.randint(k_c, (), 0, 256)
  return apply, top, left, h, w, c


def _cutout_one(key: Array, image: Array, cutout_fill: str) -> Array:
  height, width, channels = image.shape
  apply, top, left, h, w, c = cutout_params(key, height, width)
  rows = jnp.arange(height)
  cols = jnp.arange(width)
  mask = (((rows >= top) & (rows < top + h))[:, None]
          & ((cols >= left) & (cols < left + w))[None, :] & apply)
  if cutout_fill == "red":
    fill = jnp.zeros((channels,), jnp.int32).at[0].set(c)
  else:
    fill = jnp.full((channels,), c, jnp.int32)
  return jnp.where(mask[:, :, None], fill.astype(image.dtype), image)


def _flip_one(key: Array, image: Array) -> Array:
  flip = jax.random.uniform(key, ()) < FLIP_P
  return jnp.where(flip, image[:, ::-1, :], image)


# --------------------------------------------------------------------------------------------
# Batch pieces: per-example keys (B,) and images (B, H, W, C)
# --------------------------------------------------------------------------------------------


def random_crop(keys: Array, images: Array, padding: int = CROP_PADDING) -> Array:
  """RandomCrop(H, padding, zero fill) per example (spec §7.4 step 1); keys has shape (B,)."""
  return jax.vmap(functools.partial(_crop_one, padding=padding))(keys, images)


def cutout(keys: Array, images: Array, cutout_fill: str = "red") -> Array:
  """torchtoolbox Cutout() per example (spec §7.4 step 2): (c,0,0) "red" or (c,c,c) "grey"."""
  check_cutout_fill(cutout_fill)
  return jax.vmap(functools.partial(_cutout_one, cutout_fill=cutout_fill))(keys, images)


def random_flip(keys: Array, images: Array) -> Array:
  """RandomHorizontalFlip(0.5) per example (spec §7.4 step 3); keys has shape (B,)."""
  return jax.vmap(_flip_one)(keys, images)


@functools.partial(jax.jit, static_argnames=("cutout_fill",))
def augment_batch(key: Array, images: Array, cutout_fill: str = "red") -> Array:
  """Crop -> Cutout -> flip -> /255 on a uint8 batch (B, H, W, 3) (spec §7.4).

  Returns float32 in [0, 1]. Each example uses its own key from ``split(key, B)``; the same
  key gives the same output.
  """
  check_cutout_fill(cutout_fill)
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise TypeError(f"augment_batch expects uint8 images (0..255), got {images.dtype}")
  keys = jax.random.split(key, images.shape[0])
  sub = jax.vmap(lambda k: jax.random.split(k, 3))(keys)        # (B, 3) keys
  x = random_crop(sub[:, 0], images)
  x = cutout(sub[:, 1], x, cutout_fill)
  x = random_flip(sub[:, 2], x)
  return to_float(x)
