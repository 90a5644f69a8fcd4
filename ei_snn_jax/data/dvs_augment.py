"""On-device DVS transforms: 128x128 event counts -> 48x48 frames, per-sample random (spec §7.4).

Input: event counts (B, T, 128, 128, 2) of any integer or float dtype. Output: float32 frames
in the models' sequence layout (T, B, 48, 48, 2). Counts are neither normalised nor clipped.
One draw per sample is applied to all T frames and both polarities, as torchvision transforms
on a (T, 2, H, W) tensor do. The reference's pipelines (torchvision tensor ops):

* test (both datasets): Resize((48, 48)), antialiased bilinear (``eval_batch``);
* DVS128-Gesture train: RandomResizedCrop(128, scale=(0.5, 1), ratio=(3/4, 4/3), NEAREST) ->
  Resize((48, 48)) -> RandomHorizontalFlip(0.5) (RandomTemporalDelete(T_remain=T) keeps every
  frame, so it is left out) (``augment_gesture``);
* CIFAR10-DVS train: RandomResizedCrop(128, scale=(0.7, 1), NEAREST) -> Resize((48, 48)) ->
  flip W with p = 0.5 -> one of three, chosen uniformly (``augment_cifar10_dvs``):
    roll: torch.roll by (dy, dx), each ~ randint[-5, 5];
    rotate: RandomRotation(30): angle ~ U(-30, 30) degrees about the image centre, nearest,
      zero fill (torchvision's rotate: output pixel (x, y) relative to the centre reads input
      (cos a x - sin a y, sin a x + cos a y), rounded half to even, as grid_sample does);
    cutout: a 16x16 square of zeros centred at (randint[0, 48), randint[0, 48)), clipped at the
      borders.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ei_snn_jax.data import resize

Array = jax.Array

SENSOR = 128
OUT_SIZE = 48
GESTURE_CROP_SCALE = (0.5, 1.0)
CIFAR10_DVS_CROP_SCALE = (0.7, 1.0)
ROLL_MAX = 5
ROTATE_DEGREES = 30.0
CUTOUT_LENGTH = 16
FLIP_P = 0.5


def to_time_major(frames: Array) -> Array:
  """(B, T, H, W, C) -> (T, B, H, W, C), the models' sequence layout (spec §6.1)."""
  return jnp.swapaxes(frames, 0, 1)


def resize_frames(frames: Array) -> Array:
  """Resize((48, 48)) antialiased bilinear of one sample (T, H, W, 2) -> float32 (T, 48, 48, 2)."""
  wy = resize.bilinear_weights(OUT_SIZE, frames.shape[-3])
  wx = resize.bilinear_weights(OUT_SIZE, frames.shape[-2])
  return resize.apply_hw(frames.astype(jnp.float32), wy, wx)


def crop_resize_frames(key: Array, frames: Array, scale: tuple[float, float]) -> Array:
  """RandomResizedCrop(128, scale, NEAREST) then Resize((48, 48)) of one sample (T, H, W, 2).

  The nearest resize of the crop box and the antialiased bilinear resize are one (48, H)
  matrix per axis: ``bilinear (48 x 128) @ nearest (128 x H)``.
  """
  height, width = frames.shape[-3], frames.shape[-2]
  top, left, h, w = resize.random_resized_crop_box(key, height, width, scale)
  hp = jax.lax.Precision.HIGHEST
  wy = jnp.matmul(resize.bilinear_weights(OUT_SIZE, SENSOR),
                  resize.nearest_weights(SENSOR, height, top, h), precision=hp)
  wx = jnp.matmul(resize.bilinear_weights(OUT_SIZE, SENSOR),
                  resize.nearest_weights(SENSOR, width, left, w), precision=hp)
  return resize.apply_hw(frames.astype(jnp.float32), wy, wx)


def flip_frames(key: Array, frames: Array) -> Array:
  """Flip the W axis of all frames of one sample with p = 0.5."""
  return jnp.where(jax.random.uniform(key, ()) < FLIP_P, frames[..., ::-1, :], frames)


def roll_frames(key: Array, frames: Array) -> Array:
  """torch.roll over (H, W) by offsets each ~ randint[-5, 5] (function_nda's roll)."""
  ky, kx = jax.random.split(key)
  dy = jax.random.randint(ky, (), -ROLL_MAX, ROLL_MAX + 1)
  dx = jax.random.randint(kx, (), -ROLL_MAX, ROLL_MAX + 1)
  return jnp.roll(frames, (dy, dx), axis=(-3, -2))


def rotate_frames(frames: Array, degrees: Array) -> Array:
  """torchvision rotate(angle=degrees), nearest, zero fill, about the centre, all frames."""
  height, width = frames.shape[-3], frames.shape[-2]
  a = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  yc = jnp.arange(height, dtype=jnp.float32)[:, None] - (height - 1) / 2.0
  xc = jnp.arange(width, dtype=jnp.float32)[None, :] - (width - 1) / 2.0
  x_in = jnp.cos(a) * xc - jnp.sin(a) * yc + (width - 1) / 2.0
  y_in = jnp.sin(a) * xc + jnp.cos(a) * yc + (height - 1) / 2.0
  ix = jnp.round(x_in).astype(jnp.int32)          # round half to even (nearbyint)
  iy = jnp.round(y_in).astype(jnp.int32)
  inside = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
  src = frames[..., jnp.clip(iy, 0, height - 1), jnp.clip(ix, 0, width - 1), :]
  return jnp.where(inside[..., None], src, jnp.zeros((), frames.dtype))


def random_rotate_frames(key: Array, frames: Array) -> Array:
  """RandomRotation(30): angle ~ U(-30, 30) degrees (function_nda's rotate)."""
  angle = jax.random.uniform(key, (), jnp.float32, -ROTATE_DEGREES, ROTATE_DEGREES)
  return rotate_frames(frames, angle)


def cutout_frames(key: Array, frames: Array, length: int = CUTOUT_LENGTH) -> Array:
  """Zero a length x length square centred at a random pixel, clipped (function_nda's cutout)."""
  height, width = frames.shape[-3], frames.shape[-2]
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  rows = jnp.arange(height)
  cols = jnp.arange(width)
  mask = (((rows >= cy - length // 2) & (rows < cy + length // 2))[:, None]
          & ((cols >= cx - length // 2) & (cols < cx + length // 2))[None, :])
  return jnp.where(mask[..., None], jnp.zeros((), frames.dtype), frames)


def _nda_one(key: Array, frames: Array) -> Array:
  k_choice, k_op = jax.random.split(key)
  choice = jax.random.randint(k_choice, (), 0, 3)
  return jax.lax.switch(choice, [roll_frames, random_rotate_frames, cutout_frames], k_op, frames)


def _gesture_one(key: Array, frames: Array) -> Array:
  k_crop, k_flip = jax.random.split(key)
  x = crop_resize_frames(k_crop, frames, GESTURE_CROP_SCALE)
  return flip_frames(k_flip, x)


def _cifar10_dvs_one(key: Array, frames: Array) -> Array:
  k_crop, k_flip, k_nda = jax.random.split(key, 3)
  x = crop_resize_frames(k_crop, frames, CIFAR10_DVS_CROP_SCALE)
  x = flip_frames(k_flip, x)
  return _nda_one(k_nda, x)


def _check(frames: Array) -> Array:
  frames = jnp.asarray(frames)
  if frames.ndim != 5 or frames.shape[-1] != 2:
    raise ValueError(f"expected event counts (B, T, H, W, 2), got shape {frames.shape}")
  return frames


@jax.jit
def augment_gesture(key: Array, frames: Array) -> Array:
  """DVS128-Gesture training transform (B, T, 128, 128, 2) -> (T, B, 48, 48, 2) (spec §7.4)."""
  frames = _check(frames)
  keys = jax.random.split(key, frames.shape[0])
  return to_time_major(jax.vmap(_gesture_one)(keys, frames))


@jax.jit
def augment_cifar10_dvs(key: Array, frames: Array) -> Array:
  """CIFAR10-DVS training transform (B, T, 128, 128, 2) -> (T, B, 48, 48, 2) (spec §7.4)."""
  frames = _check(frames)
  keys = jax.random.split(key, frames.shape[0])
  return to_time_major(jax.vmap(_cifar10_dvs_one)(keys, frames))


@jax.jit
def eval_batch(frames: Array) -> Array:
  """Test transform of both DVS datasets: Resize((48, 48)) -> (T, B, 48, 48, 2) (spec §7.4)."""
  frames = _check(frames)
  return to_time_major(jax.vmap(resize_frames)(frames))
