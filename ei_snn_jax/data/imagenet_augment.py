"""On-device Tiny-ImageNet-200 augmentation, jittable, per-sample random (spec §7.4).

The reference (torchvision on PIL uint8 images, 64x64 input), per training image in order:

  1. RandomResizedCrop(32, scale=(0.08, 1), ratio=(3/4, 4/3)), antialiased bilinear
     (``resize.random_resized_crop_box``, ``resize.bilinear_weights``; Pillow resamples the
     rows, rounds to uint8, then the columns);
  2. RandomHorizontalFlip(0.5);
  3. ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1): factors
     b, c, s ~ U(0.6, 1.4), h ~ U(-0.1, 0.1), applied in a random order (randperm(4)) as Pillow
     does them on uint8 RGB: brightness blends with black, contrast with the grey level
     int(mean(L) + 0.5), saturation with the image's L; a blend is deg + f (img - deg),
     truncated and clipped to 0..255; L = (19595 R + 38470 G + 7471 B + 2^15) >> 16. Hue
     converts to Pillow's uint8 HSV, adds trunc(h * 255) to H modulo 256 and converts back;
  4. torchtoolbox Cutout() (``augment.cutout``, faithful red (c, 0, 0) fill by default);
  5. ToTensor (/255).

The validation transform is Resize(32) (antialiased bilinear 64 -> 32) and ToTensor
(``eval_batch``). Resizing uses Pillow's fixed-point arithmetic; the HSV round trip of the hue
step is float32 where Pillow mixes float and double, so rare pixels (~0.2%) land one hue step
(up to a few grey levels) away from Pillow's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ei_snn_jax.data import augment, resize

Array = jax.Array

OUT_SIZE = 32
RRC_SCALE = (0.08, 1.0)
JITTER = (0.4, 0.4, 0.4, 0.1)       # brightness, contrast, saturation, hue


PIL_PRECISION_BITS = 22          # Pillow's fixed-point resampling coefficients (32 - 8 - 2)


def _fixed_point(weights: Array) -> Array:
  return jnp.floor(weights * (1 << PIL_PRECISION_BITS) + 0.5).astype(jnp.int32)


def _resample_pass(spec: str, weights: Array, image: Array) -> Array:
  """One Pillow pass: integer sum of fixed-point weights, rounded half up, clipped."""
  acc = jnp.einsum(spec, _fixed_point(weights), image.astype(jnp.int32),
                   preferred_element_type=jnp.int32)
  acc = (acc + (1 << (PIL_PRECISION_BITS - 1))) >> PIL_PRECISION_BITS
  return jnp.clip(acc, 0, 255).astype(jnp.uint8)


def resize_uint8(image: Array, out_size: int, top=0, left=0, h=None, w=None) -> Array:
  """Pillow's BILINEAR resize of the uint8 window [top, top+h) x [left, left+w) of (H, W, C).

  Two passes as Pillow: columns (W) first, rounded to uint8, then rows, with 22-bit
  fixed-point weights.
  """
  height, width, _ = image.shape
  wy = resize.bilinear_weights(out_size, height, top, height if h is None else h)
  wx = resize.bilinear_weights(out_size, width, left, width if w is None else w)
  rows = _resample_pass("pw,hwc->hpc", wx, image)
  return _resample_pass("oh,hpc->opc", wy, rows)


def _random_resized_crop_one(key: Array, image: Array, out_size: int) -> Array:
  height, width, _ = image.shape
  top, left, h, w = resize.random_resized_crop_box(key, height, width, RRC_SCALE)
  return resize_uint8(image, out_size, top, left, h, w)


def random_resized_crop(keys: Array, images: Array, out_size: int = OUT_SIZE) -> Array:
  """RandomResizedCrop(out_size, scale=(0.08, 1)) per example (spec §7.4 step 1)."""
  return jax.vmap(functools.partial(_random_resized_crop_one, out_size=out_size))(keys, images)


# --------------------------------------------------------------------------------------------
# ColorJitter (Pillow semantics on uint8 RGB)
# --------------------------------------------------------------------------------------------


def grayscale(image: Array) -> Array:
  """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, int32 (H, W)."""
  x = image.astype(jnp.int32)
  return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16


def blend(degenerate: Array, image: Array, factor: Array) -> Array:
  """Pillow Image.blend on uint8: deg + f (img - deg), truncated, clipped to 0..255."""
  d = degenerate.astype(jnp.float32)
  out = d + factor * (image.astype(jnp.float32) - d)
  return jnp.clip(jnp.trunc(out), 0, 255).astype(jnp.uint8)


def adjust_brightness(image: Array, factor: Array) -> Array:
  """torchvision adjust_brightness on a PIL image (ImageEnhance.Brightness)."""
  return blend(jnp.zeros_like(image), image, factor)


def adjust_contrast(image: Array, factor: Array) -> Array:
  """torchvision adjust_contrast on a PIL image: blend with grey int(mean(L) + 0.5)."""
  mean = jnp.floor(jnp.mean(grayscale(image).astype(jnp.float32)) + 0.5)
  return blend(jnp.full(image.shape, mean, jnp.float32), image, factor)


def adjust_saturation(image: Array, factor: Array) -> Array:
  """torchvision adjust_saturation on a PIL image (ImageEnhance.Color): blend with L."""
  grey = jnp.broadcast_to(grayscale(image)[..., None], image.shape)
  return blend(grey, image, factor)


def rgb_to_hsv(image: Array) -> Array:
  """Pillow's uint8 RGB -> HSV (each 0..255, int32)."""
  x = image.astype(jnp.int32)
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.maximum(r, jnp.maximum(g, b))
  minc = jnp.minimum(r, jnp.minimum(g, b))
  cr = jnp.maximum(maxc - minc, 1).astype(jnp.float32)
  s = (maxc - minc).astype(jnp.float32) / jnp.maximum(maxc, 1).astype(jnp.float32)
  rc = (maxc - r).astype(jnp.float32) / cr
  gc = (maxc - g).astype(jnp.float32) / cr
  bc = (maxc - b).astype(jnp.float32) / cr
  h = jnp.where(r == maxc, bc - gc, jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.mod(h / 6.0 + 1.0, 1.0)
  grey = minc == maxc
  uh = jnp.where(grey, 0, jnp.clip(jnp.trunc(h * 255.0), 0, 255).astype(jnp.int32))
  us = jnp.where(grey, 0, jnp.clip(jnp.trunc(s * 255.0), 0, 255).astype(jnp.int32))
  return jnp.stack([uh, us, maxc], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
  """Pillow's uint8 HSV -> RGB (uint8)."""
  h = hsv[..., 0].astype(jnp.float32)
  s = hsv[..., 1]
  v = hsv[..., 2]
  hh = h * 6.0 / 255.0
  i = jnp.floor(hh)
  f = hh - i
  fs = s.astype(jnp.float32) / 255.0
  vf = v.astype(jnp.float32)

  def round_away(x):         # C round(): halves away from zero
    return jnp.clip(jnp.floor(x + 0.5), 0, 255).astype(jnp.int32)

  p = round_away(vf * (1.0 - fs))
  q = round_away(vf * (1.0 - fs * f))
  t = round_away(vf * (1.0 - fs * (1.0 - f)))
  sector = i.astype(jnp.int32) % 6
  choices = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1), jnp.stack([p, v, t], -1),
      jnp.stack([p, q, v], -1), jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)])
  rgb = jnp.take_along_axis(choices, sector[None, ..., None], axis=0)[0]
  rgb = jnp.where((s == 0)[..., None], v[..., None], rgb)
  return rgb.astype(jnp.uint8)


def adjust_hue(image: Array, factor: Array) -> Array:
  """torchvision adjust_hue on a PIL image: H += trunc(factor * 255) mod 256 in Pillow HSV."""
  hsv = rgb_to_hsv(image)
  shift = jnp.trunc(factor * 255.0).astype(jnp.int32)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + shift, 256))
  return hsv_to_rgb(hsv)


def color_jitter_params(key: Array, strengths=JITTER) -> tuple[Array, Array]:
  """torchvision ColorJitter.get_params: (order (4,), factors (4,) for b, c, s, h)."""
  b, c, s, h = strengths
  k_order, k_fac = jax.random.split(key)
  lo = jnp.asarray([1 - b, 1 - c, 1 - s, -h], jnp.float32)
  hi = jnp.asarray([1 + b, 1 + c, 1 + s, h], jnp.float32)
  factors = lo + (hi - lo) * jax.random.uniform(k_fac, (4,), jnp.float32)
  return jax.random.permutation(k_order, 4), factors


def _color_jitter_one(key: Array, image: Array) -> Array:
  order, factors = color_jitter_params(key)
  ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
  for k in range(4):               # every op computed, one selected: cheap at 32x32, no cond
    outs = jnp.stack([op(image, factors[i]) for i, op in enumerate(ops)])
    image = outs[order[k]]
  return image


def color_jitter(keys: Array, images: Array) -> Array:
  """ColorJitter(0.4, 0.4, 0.4, 0.1) per example on uint8 RGB (spec §7.4 step 3)."""
  return jax.vmap(_color_jitter_one)(keys, images)


# --------------------------------------------------------------------------------------------
# Whole pipelines
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cutout_fill",))
def augment_batch(key: Array, images: Array, cutout_fill: str = "red") -> Array:
  """Tiny-ImageNet training transform on uint8 (B, 64, 64, 3) -> float32 (B, 32, 32, 3).

  RandomResizedCrop(32, (0.08, 1)) -> flip -> ColorJitter -> Cutout -> /255 (spec §7.4); each
  example uses its own key from ``split(key, B)``.
  """
  augment.check_cutout_fill(cutout_fill)
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8:
    raise TypeError(f"augment_batch expects uint8 images (0..255), got {images.dtype}")
  keys = jax.random.split(key, images.shape[0])
  sub = jax.vmap(lambda k: jax.random.split(k, 4))(keys)
  x = random_resized_crop(sub[:, 0], images)
  x = augment.random_flip(sub[:, 1], x)
  x = color_jitter(sub[:, 2], x)
  x = augment.cutout(sub[:, 3], x, cutout_fill)
  return augment.to_float(x)


@jax.jit
def eval_batch(images: Array) -> Array:
  """Tiny-ImageNet validation transform: Resize(32) -> /255, uint8 (B, H, W, 3) (spec §7.4)."""
  images = jnp.asarray(images)
  if images.shape[1:3] != (OUT_SIZE, OUT_SIZE):
    images = jax.vmap(lambda im: resize_uint8(im, OUT_SIZE))(images)
  return augment.to_float(images)
