"""Resampling as small matrices, jittable with traced crop boxes (spec §7.4).

torchvision's crops and resizes become per-axis weight matrices (out, in) that act on the full
image axis, so a crop box drawn inside ``jit`` needs no dynamic shapes:

* ``bilinear_weights``: antialiased bilinear, the algorithm of Pillow's ``Image.resize(...,
  BILINEAR)`` and of torch ``interpolate(..., antialias=True)`` (torchvision ``Resize`` on PIL
  images and on tensors). For output pixel o of a window [start, start + length) resized to n
  pixels, scale = length / n, centre = (o + 0.5) * scale, support = max(scale, 1); input pixel
  k (relative to start) gets the triangle weight max(0, 1 - |k + 0.5 - centre| / support), the
  weights of the window are normalised to sum 1 and pixels outside the window get none (the
  crop is taken first, as torchvision does).
* ``nearest_weights``: torch ``interpolate(mode='nearest')`` (torchvision NEAREST on tensors):
  o takes pixel start + min(floor(o * (length / n)), length - 1), computed in float32.
* ``random_resized_crop_box``: torchvision ``RandomResizedCrop.get_params``: up to 10 draws of
  area ~ U(scale) * H * W and log-aspect ~ U(log ratio), w = round(sqrt(area * aspect)),
  h = round(sqrt(area / aspect)); the first draw that fits (0 < w <= W, 0 < h <= H) is placed at
  top ~ randint[0, H - h], left ~ randint[0, W - w]; if none fits, the central crop of the
  clamped aspect ratio (the whole image for square inputs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10


def bilinear_weights(out_size: int, in_size: int, start=0, length=None) -> Array:
  """(out_size, in_size) antialiased bilinear weights for the window [start, start+length)."""
  length = in_size if length is None else length
  start = jnp.asarray(start, jnp.float32)
  length = jnp.asarray(length, jnp.float32)
  scale = length / out_size
  support = jnp.maximum(scale, 1.0)
  centre = (jnp.arange(out_size, dtype=jnp.float32)[:, None] + 0.5) * scale
  k = jnp.arange(in_size, dtype=jnp.float32)[None, :] - start
  w = jnp.maximum(0.0, 1.0 - jnp.abs(k + 0.5 - centre) / support)
  w = jnp.where((k >= 0) & (k < length), w, 0.0)
  total = jnp.sum(w, axis=1, keepdims=True)
  return w / jnp.where(total > 0, total, 1.0)


def nearest_weights(out_size: int, in_size: int, start=0, length=None) -> Array:
  """(out_size, in_size) one-hot rows of torch's nearest resize of [start, start+length)."""
  length = in_size if length is None else length
  length_i = jnp.asarray(length, jnp.int32)
  scale = length_i.astype(jnp.float32) / jnp.float32(out_size)
  o = jnp.arange(out_size, dtype=jnp.float32)
  src = jnp.minimum(jnp.floor(o * scale).astype(jnp.int32), length_i - 1)
  src = src + jnp.asarray(start, jnp.int32)
  return (src[:, None] == jnp.arange(in_size, dtype=jnp.int32)[None, :]).astype(jnp.float32)


def apply_hw(image: Array, wy: Array, wx: Array) -> Array:
  """Resample the (H, W) axes of ``image`` (..., H, W, C) with row / column weight matrices."""
  hp = jax.lax.Precision.HIGHEST
  out = jnp.einsum("oh,...hwc->...owc", wy, image, precision=hp)
  return jnp.einsum("pw,...owc->...opc", wx, out, precision=hp)


def random_resized_crop_box(key: Array, height: int, width: int, scale: tuple[float, float],
                            ratio: tuple[float, float] = RRC_RATIO) -> tuple[Array, ...]:
  """torchvision RandomResizedCrop.get_params -> int32 (top, left, h, w) (module doc)."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (RRC_ATTEMPTS,), jnp.float32, *scale)
  log_ratio = jax.random.uniform(k_ratio, (RRC_ATTEMPTS,), jnp.float32, math.log(ratio[0]),
                                 math.log(ratio[1]))
  aspect = jnp.exp(log_ratio)
  w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)     # round half to even, as Python
  h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = jnp.argmax(fits)
  any_fit = jnp.any(fits)
  in_ratio = width / height
  if in_ratio < min(ratio):
    fb_w, fb_h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    fb_w, fb_h = int(round(height * max(ratio))), height
  else:
    fb_w, fb_h = width, height
  h = jnp.where(any_fit, h[first], fb_h)
  w = jnp.where(any_fit, w[first], fb_w)
  top = jnp.where(any_fit, jax.random.randint(k_top, (), 0, height - h + 1), (height - fb_h) // 2)
  left = jnp.where(any_fit, jax.random.randint(k_left, (), 0, width - w + 1), (width - fb_w) // 2)
  return top.astype(jnp.int32), left.astype(jnp.int32), h, w
