"""Tests of the on-device training augmentation (spec §7.4)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.data import augment

N = 4000  # samples for the statistics; a rate of 0.5 has std 0.008 at this size
H = W = 32


def _keys(seed: int, n: int = N) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


def _const(colour, n: int = N) -> jnp.ndarray:
  return jnp.broadcast_to(jnp.asarray(colour, jnp.uint8), (n, H, W, 3))


def _coord_image() -> np.ndarray:
  """R = row + 1, G = column + 1, B = 7: every pixel is non-zero and names its position."""
  img = np.zeros((H, W, 3), np.uint8)
  img[..., 0] = np.arange(1, H + 1)[:, None]
  img[..., 1] = np.arange(1, W + 1)[None, :]
  img[..., 2] = 7
  return img


_crop = jax.jit(augment.random_crop)
_flip = jax.jit(augment.random_flip)
_cutout = jax.jit(augment.cutout, static_argnames="cutout_fill")


@functools.lru_cache(maxsize=None)
def _green_cutout(fill: str) -> tuple[np.ndarray, np.ndarray]:
  """Cutout on N green (0, 200, 0) images -> (output, erased mask (N, H, W))."""
  out = np.asarray(_cutout(_keys(1), _const((0, 200, 0)), cutout_fill=fill))
  return out, np.any(out != np.array([0, 200, 0], np.uint8), axis=-1)


def _reference_area_mean(n: int = 400_000, seed: int = 0) -> float:
  """Mean erased area (pixels) of torchtoolbox Cutout's formula, in numpy float64."""
  rng = np.random.default_rng(seed)
  s = rng.uniform(0.02, 0.4, n) * H * W
  r = rng.uniform(0.4, 2.5, n)
  w = np.minimum(np.floor(np.sqrt(s / r)), W)
  h = np.minimum(np.floor(np.sqrt(s * r)), H)
  return float((w * h).mean())


# --------------------------------------------------------------------------------------------


def test_augment_batch_dtype_range_and_determinism():
  x = jax.random.randint(jax.random.key(0), (64, H, W, 3), 0, 256).astype(jnp.uint8)
  a = augment.augment_batch(jax.random.key(5), x)
  b = augment.augment_batch(jax.random.key(5), x)
  c = augment.augment_batch(jax.random.key(6), x)
  assert a.dtype == jnp.float32 and a.shape == x.shape
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  # Values are exactly k / 255 for integer k (no interpolation, no normalisation).
  k = np.asarray(a) * 255.0
  np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_augment_batch_is_crop_then_cutout_then_flip():
  x = jnp.asarray(np.broadcast_to(_coord_image(), (256, H, W, 3)))
  key = jax.random.key(11)
  for fill in augment.CUTOUT_FILLS:
    got = augment.augment_batch(key, x, cutout_fill=fill)
    keys = jax.random.split(key, x.shape[0])
    sub = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    want = augment.random_flip(sub[:, 2], augment.cutout(sub[:, 1],
                                                         augment.random_crop(sub[:, 0], x), fill))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want, np.float32) / 255.0)


def test_to_float():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
  y = augment.to_float(x)
  assert y.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(y), x.astype(np.float32) / np.float32(255.0))


def test_bad_arguments():
  x = jnp.zeros((2, H, W, 3), jnp.uint8)
  with pytest.raises(ValueError, match="cutout_fill"):
    augment.augment_batch(jax.random.key(0), x, cutout_fill="blue")
  with pytest.raises(ValueError, match="cutout_fill"):
    augment.cutout(_keys(0, 2), x, cutout_fill="gray")
  with pytest.raises(TypeError, match="uint8"):
    augment.augment_batch(jax.random.key(0), x.astype(jnp.float32))


def test_random_crop_offsets_and_zero_padding():
  img = _coord_image()
  out = np.asarray(_crop(_keys(2), jnp.asarray(np.broadcast_to(img, (N, H, W, 3)))))
  # The centre pixel is always inside the image: it tells the offsets (in [0, 8]).
  dy = out[:, 16, 16, 0].astype(int) - 13
  dx = out[:, 16, 16, 1].astype(int) - 13
  counts_y = np.bincount(dy, minlength=9)
  counts_x = np.bincount(dx, minlength=9)
  assert counts_y.shape == (9,) and counts_x.shape == (9,)
  assert counts_y.min() > 0.7 * N / 9 and counts_x.min() > 0.7 * N / 9
  padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
  for i in range(50):
    np.testing.assert_array_equal(out[i], padded[dy[i]:dy[i] + H, dx[i]:dx[i] + W])
  zero = np.all(out == 0, axis=-1)
  assert zero.any(axis=(1, 2)).mean() > 0.7            # P(dy != 4 or dx != 4) = 80/81
  np.testing.assert_array_equal(zero.any(axis=(1, 2)), (dy != 4) | (dx != 4))


def test_random_flip_rate():
  img = _coord_image()
  out = np.asarray(_flip(_keys(3), jnp.asarray(np.broadcast_to(img, (N, H, W, 3)))))
  flipped = np.all(out == img[:, ::-1], axis=(1, 2, 3))
  kept = np.all(out == img, axis=(1, 2, 3))
  assert np.all(flipped ^ kept)
  assert abs(flipped.mean() - 0.5) < 0.05


def test_cutout_rate_area_and_shape():
  out, erased = _green_cutout("red")
  any_erased = erased.any(axis=(1, 2))
  # c = 0 writes (0, 0, 0), still different from green, so every erasure is visible.
  assert abs(any_erased.mean() - 0.5) < 0.05
  areas, hs, ws, tops, lefts, cs = [], [], [], [], [], []
  for m, o in zip(erased[any_erased], out[any_erased]):
    rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    t, b, l, r = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert m.sum() == (b - t) * (r - l) and m[t:b, l:r].all()       # one solid rectangle
    px = o[m]
    assert np.all(px[:, 1:] == 0) and np.all(px[:, 0] == px[0, 0])   # (c, 0, 0), one c
    areas.append(m.sum())
    hs.append(b - t)
    ws.append(r - l)
    tops.append(t)
    lefts.append(l)
    cs.append(int(px[0, 0]))
  areas, hs, ws = np.array(areas), np.array(hs), np.array(ws)
  # w, h = int(sqrt(s / r)), int(sqrt(s * r)) with s in [20.48, 409.6], r in [0.4, 2.5]:
  # both in [2, 32], area <= 0.4 * 1024 and >= 2 * 7.
  assert hs.min() >= 2 and ws.min() >= 2 and hs.max() <= 32 and ws.max() <= 32
  assert areas.max() <= 0.4 * H * W and areas.min() >= 14
  ref = _reference_area_mean()
  assert abs(areas.mean() - ref) < 0.05 * ref, (areas.mean(), ref)
  # Placement is inclusive at both ends, and c spans [0, 255].
  tops, lefts = np.array(tops), np.array(lefts)
  assert (tops == 0).any() and (lefts == 0).any()
  assert ((tops + hs) == H).any() and ((lefts + ws) == W).any()
  cs = np.array(cs)
  assert cs.min() < 10 and cs.max() > 245 and abs(cs.mean() - 127.5) < 10


def test_cutout_grey_fill():
  out, erased = _green_cutout("grey")
  any_erased = erased.any(axis=(1, 2))
  assert abs(any_erased.mean() - 0.5) < 0.05
  for m, o in zip(erased[any_erased][:500], out[any_erased][:500]):
    px = o[m]
    assert np.all(px == px[0, 0])                    # (c, c, c), one c
  # Same keys: the grey rectangles are exactly the red ones (only the fill differs).
  _, erased_red = _green_cutout("red")
  np.testing.assert_array_equal(erased, erased_red)


def test_full_pipeline_statistics():
  # On a constant image, a flip is invisible, so count crops (zeros) and cutouts separately.
  x = _const((90, 160, 230), 2000)
  out = np.asarray(augment.augment_batch(jax.random.key(9), x))
  u8 = np.round(out * 255).astype(np.uint8)
  zero = np.all(u8 == 0, axis=-1)
  other = ~np.all(u8 == np.array([90, 160, 230], np.uint8), axis=-1) & ~zero
  assert zero.any(axis=(1, 2)).mean() > 0.9
  # Red fill with c > 0 never equals the image colour or black: an erased image shows it.
  rate = other.any(axis=(1, 2)).mean()
  assert abs(rate - 0.5) < 0.05
  frac = other.sum(axis=(1, 2))[other.any(axis=(1, 2))] / (H * W)
  assert frac.max() <= 0.4 + 1e-9
  assert out.dtype == np.float32
