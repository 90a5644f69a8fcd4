"""On-device DVS transforms and the resampling matrices they use (spec §7.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.data import dvs_augment, resize


def _counts(seed, shape=(2, 3, 128, 128, 2)):
  return np.random.default_rng(seed).integers(0, 6, shape).astype(np.uint8)


def test_bilinear_weights_match_torch_antialias():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).random((2, 2, 128, 128)).astype(np.float32) * 5
  want = torch.nn.functional.interpolate(torch.tensor(x), size=(48, 48), mode="bilinear",
                                         antialias=True, align_corners=False).numpy()
  got = dvs_augment.eval_batch(jnp.asarray(x.transpose(0, 2, 3, 1))[:, None])   # (T=1, B, ...)
  np.testing.assert_allclose(np.asarray(got)[0].transpose(0, 3, 1, 2), want, atol=2e-5)


@pytest.mark.parametrize("top,length", [(0, 128), (5, 90), (20, 64), (1, 127), (40, 37)])
def test_nearest_weights_match_torch_nearest(top, length):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(1).random((1, 1, 128, 128)).astype(np.float32)
  crop = x[..., top:top + length, top:top + length]
  want = torch.nn.functional.interpolate(torch.tensor(crop), size=(128, 128),
                                         mode="nearest").numpy()[0, 0]
  w = np.asarray(resize.nearest_weights(128, 128, top, length))
  np.testing.assert_array_equal(w @ x[0, 0] @ w.T, want)


def test_bilinear_weights_rows_sum_to_one_inside_the_window():
  w = np.asarray(resize.bilinear_weights(48, 128, 10, 70))
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  assert not w[:, :10].any() and not w[:, 80:].any()


def test_random_resized_crop_box_properties():
  keys = jax.random.split(jax.random.key(0), 2000)
  top, left, h, w = jax.vmap(lambda k: resize.random_resized_crop_box(k, 128, 128,
                                                                      (0.5, 1.0)))(keys)
  top, left, h, w = map(np.asarray, (top, left, h, w))
  assert (h > 0).all() and (w > 0).all() and (top + h <= 128).all() and (left + w <= 128).all()
  area = h * w / 128 ** 2
  assert area.min() > 0.45 and area.max() <= 1.0
  assert 0.73 < np.median(w / h) < 1.37
  assert len(np.unique(top)) > 10


def test_eval_batch_layout_and_mass():
  x = _counts(2)
  out = np.asarray(dvs_augment.eval_batch(x))
  assert out.shape == (3, 2, 48, 48, 2) and out.dtype == np.float32
  # antialiased resize averages: the total count scales by about (48/128)^2 (edges renormalise)
  np.testing.assert_allclose(out.sum((2, 3, 4)), x.sum((2, 3, 4)).T * (48 / 128) ** 2, rtol=2e-3)


@pytest.mark.parametrize("fn", [dvs_augment.augment_gesture, dvs_augment.augment_cifar10_dvs])
def test_train_transforms_shape_determinism_and_same_draw_for_all_frames(fn):
  one = _counts(3, (2, 1, 128, 128, 2))
  x = np.repeat(one, 3, axis=1)                   # T = 3 identical frames per sample
  a = np.asarray(fn(jax.random.key(5), x))
  b = np.asarray(fn(jax.random.key(5), x))
  c = np.asarray(fn(jax.random.key(6), x))
  assert a.shape == (3, 2, 48, 48, 2) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(a[0], a[1])       # one draw per sample, applied to every frame
  np.testing.assert_array_equal(a[0], a[2])
  assert (a >= 0).all()


def test_gesture_with_full_crop_and_no_flip_is_the_eval_resize():
  x = jnp.asarray(_counts(4)[0])                   # one sample (T, H, W, 2)
  wy = resize.bilinear_weights(48, 128) @ resize.nearest_weights(128, 128, 0, 128)
  got = resize.apply_hw(x.astype(jnp.float32), wy, wy)
  np.testing.assert_allclose(np.asarray(got), np.asarray(dvs_augment.resize_frames(x)),
                             atol=1e-5)


def test_roll_cutout_flip():
  x = jnp.asarray(np.random.default_rng(5).random((2, 48, 48, 2)).astype(np.float32))
  rolled = np.asarray(dvs_augment.roll_frames(jax.random.key(1), x))
  shifts = [(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6)
            if np.array_equal(np.roll(np.asarray(x), (dy, dx), axis=(1, 2)), rolled)]
  assert len(shifts) == 1
  cut = np.asarray(dvs_augment.cutout_frames(jax.random.key(2), x))
  zero = (cut == 0).all(axis=(0, 3))
  rows, cols = np.nonzero(zero)
  assert 1 <= rows.max() - rows.min() + 1 <= 16 and 1 <= cols.max() - cols.min() + 1 <= 16
  np.testing.assert_array_equal(cut[:, ~zero], np.asarray(x)[:, ~zero])
  flips = {np.array_equal(np.asarray(dvs_augment.flip_frames(jax.random.key(k), x)),
                          np.asarray(x)[:, :, ::-1]) for k in range(20)}
  assert flips == {True, False}


def test_rotate_matches_torchvision_grid():
  """torchvision's tensor rotate: inverse-affine grid + grid_sample(nearest, zeros)."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(6).random((1, 2, 48, 48)).astype(np.float32)
  for angle in (-29.0, -7.5, 12.0, 30.0):
    r = np.deg2rad(-angle)                        # torchvision passes -angle to the inverse
    theta = torch.tensor([[[np.cos(r), np.sin(r), 0.0], [-np.sin(r), np.cos(r), 0.0]]],
                         dtype=torch.float32)
    base_x = torch.linspace(-24 + 0.5, 24 + 0.5 - 1, 48)
    base_y = torch.linspace(-24 + 0.5, 24 + 0.5 - 1, 48)
    grid = torch.stack(torch.meshgrid(base_y, base_x, indexing="ij")[::-1] + (torch.ones(48, 48),),
                       -1).reshape(1, -1, 3)
    grid = grid.bmm(theta.transpose(1, 2) / torch.tensor([24.0, 24.0])).reshape(1, 48, 48, 2)
    want = torch.nn.functional.grid_sample(torch.tensor(x), grid, mode="nearest",
                                           padding_mode="zeros", align_corners=False).numpy()
    got = np.asarray(dvs_augment.rotate_frames(jnp.asarray(x.transpose(0, 2, 3, 1)), angle))
    mismatch = np.mean(got.transpose(0, 3, 1, 2) != want)
    assert mismatch < 0.01, (angle, mismatch)     # ties of the rounding may differ
  np.testing.assert_array_equal(
      np.asarray(dvs_augment.rotate_frames(jnp.asarray(x.transpose(0, 2, 3, 1)), 0.0)),
      x.transpose(0, 2, 3, 1))
