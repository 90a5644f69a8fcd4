"""Tiny-ImageNet-200 folder reader (real JPEGs) and its on-device augmentation (spec §7.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ei_snn_jax.data import DataError, imagenet_augment, tiny_imagenet

WNIDS = ["n02124075", "n01443537", "n09193705"]     # deliberately not in sorted order


def _write_folder(root, rng, per_class=3, val=5):
  root.mkdir(parents=True)
  (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
  for wnid in WNIDS:
    images = root / "train" / wnid / "images"
    images.mkdir(parents=True)
    (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    for k in range(per_class):
      arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
      Image.fromarray(arr).save(images / f"{wnid}_{k}.JPEG", quality=90)
  (root / "val" / "images").mkdir(parents=True)
  lines = []
  for k in range(val):
    arr = rng.integers(0, 256, (64, 64), dtype=np.uint8)            # a greyscale JPEG
    Image.fromarray(arr, "L").save(root / "val" / "images" / f"val_{k}.JPEG")
    lines.append(f"val_{k}.JPEG\t{WNIDS[k % 3]}\t0\t0\t63\t63")
  (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_folder_reader_labels_order_and_pixels(tmp_path):
  rng = np.random.default_rng(0)
  _write_folder(tmp_path / "tiny-imagenet-200", rng)
  ds = tiny_imagenet.load_tiny_imagenet(tmp_path, cache_dir=tmp_path / "cache", workers=2)
  assert ds.num_classes == 200 and ds.name == "tiny_imagenet"
  assert ds.x_train.shape == (9, 64, 64, 3) and ds.x_train.dtype == np.uint8
  assert ds.x_test.shape == (5, 64, 64, 3)
  order = sorted(WNIDS)                              # ImageFolder: class folders sorted
  assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert ds.y_test.tolist() == [order.index(WNIDS[k % 3]) for k in range(5)]
  root = tmp_path / "tiny-imagenet-200"
  first = np.asarray(Image.open(root / "train" / order[0] / "images" / f"{order[0]}_0.JPEG"))
  np.testing.assert_array_equal(ds.x_train[0], first)
  grey = np.asarray(Image.open(root / "val" / "images" / "val_3.JPEG").convert("RGB"))
  np.testing.assert_array_equal(ds.x_test[3], grey)
  # The cache is reused without the folder.
  assert (tmp_path / "cache" / "tiny_imagenet.npz").is_file()
  import shutil
  shutil.rmtree(root)
  again = tiny_imagenet.load_tiny_imagenet(tmp_path, cache_dir=tmp_path / "cache")
  np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_folder_errors_name_the_file(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "t"
  _write_folder(root, rng, per_class=1, val=2)
  (root / "val" / "val_annotations.txt").unlink()
  with pytest.raises(DataError, match=r"val_annotations\.txt is missing"):
    tiny_imagenet.load_tiny_imagenet(root)
  (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
  with pytest.raises(DataError, match=r"line 1: class 'n99999999' has no train/ folder"):
    tiny_imagenet.load_tiny_imagenet(root)
  (root / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\t{WNIDS[0]}\t0\t0\t1\t1\n")
  bad = root / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG"
  bad.write_bytes(b"\xff\xd8\xff not a jpeg")
  with pytest.raises(DataError, match=rf"{WNIDS[1]}_0\.JPEG could not be decoded"):
    tiny_imagenet.load_tiny_imagenet(root)
  Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(bad, format="JPEG")
  with pytest.raises(DataError, match=rf"{WNIDS[1]}_0\.JPEG is 48x32, expected 64x64"):
    tiny_imagenet.load_tiny_imagenet(root)


def test_wrong_layout(tmp_path):
  rng = np.random.default_rng(2)
  root = tmp_path / "t"
  _write_folder(root, rng, per_class=1, val=1)
  images = root / "train" / WNIDS[2] / "images"
  for p in images.iterdir():
    p.rename(root / "train" / WNIDS[2] / p.name)       # images directly under train/<wnid>/
  images.rmdir()
  with pytest.raises(DataError, match=rf"{WNIDS[2]}/images is missing"):
    tiny_imagenet.load_tiny_imagenet(root)
  with pytest.raises(DataError, match=r"has no wnids\.txt or train/ folder"):
    tiny_imagenet.load_tiny_imagenet(tmp_path / "t" / "val")
  with pytest.raises(DataError, match=r"TFDS has no Tiny-ImageNet builder"):
    tiny_imagenet.load_tiny_imagenet(root, source="tfds")


# --------------------------------------------------------------------------------------------
# Augmentation against Pillow
# --------------------------------------------------------------------------------------------


def _image(seed, shape=(64, 64, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("box", [None, (3, 5, 40, 50), (10, 2, 20, 13), (30, 40, 9, 24)])
def test_resize_matches_pillow(box):
  img = _image(3)
  pil = Image.fromarray(img)
  if box is None:
    want = np.asarray(pil.resize((32, 32), Image.BILINEAR))
    got = imagenet_augment.resize_uint8(jnp.asarray(img), 32)
  else:
    top, left, h, w = box
    want = np.asarray(pil.crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR))
    got = imagenet_augment.resize_uint8(jnp.asarray(img), 32, top, left, h, w)
  diff = np.abs(np.asarray(got).astype(int) - want.astype(int))
  assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


@pytest.mark.parametrize("factor", [0.6, 0.87, 1.13, 1.4])
def test_brightness_contrast_saturation_equal_pillow(factor):
  img = _image(4, (32, 32, 3))
  pil = Image.fromarray(img)
  for enhance, fn in ((ImageEnhance.Brightness, imagenet_augment.adjust_brightness),
                      (ImageEnhance.Contrast, imagenet_augment.adjust_contrast),
                      (ImageEnhance.Color, imagenet_augment.adjust_saturation)):
    want = np.asarray(enhance(pil).enhance(factor))
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(img), jnp.float32(factor))), want)
  np.testing.assert_array_equal(np.asarray(imagenet_augment.grayscale(jnp.asarray(img))),
                                np.asarray(pil.convert("L")))


@pytest.mark.parametrize("hue", [-0.1, -0.02, 0.05, 0.1])
def test_hue_close_to_torchvision_on_pillow(hue):
  img = _image(5, (32, 32, 3))
  h, s, v = Image.fromarray(img).convert("HSV").split()
  shifted = ((np.asarray(h).astype(int) + int(hue * 255)) % 256).astype(np.uint8)
  want = np.asarray(Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB"))
  got = np.asarray(imagenet_augment.adjust_hue(jnp.asarray(img), jnp.float32(hue)))
  assert np.mean(got != want) < 0.01
  hsv = np.asarray(Image.fromarray(img).convert("HSV"))
  np.testing.assert_array_equal(np.asarray(imagenet_augment.hsv_to_rgb(jnp.asarray(hsv))),
                                np.asarray(Image.fromarray(hsv, "HSV").convert("RGB")))


def test_augment_and_eval_batches():
  images = np.stack([_image(k) for k in range(4)])
  a = np.asarray(imagenet_augment.augment_batch(jax.random.key(0), images))
  b = np.asarray(imagenet_augment.augment_batch(jax.random.key(0), images))
  c = np.asarray(imagenet_augment.augment_batch(jax.random.key(1), images))
  assert a.shape == (4, 32, 32, 3) and a.dtype == np.float32
  assert 0.0 <= a.min() and a.max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  ev = np.asarray(imagenet_augment.eval_batch(images))
  want = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR))
                   for im in images]) / 255.0
  np.testing.assert_allclose(ev, want, atol=1.01 / 255)
  with pytest.raises(TypeError, match="uint8"):
    imagenet_augment.augment_batch(jax.random.key(0), images.astype(np.float32))
