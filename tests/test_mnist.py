"""MNIST IDX reader (spec §6.4): files written here in the official format."""

import gzip
import struct

import numpy as np
import pytest

from ei_snn_jax.data import DataError, mnist


def _idx(data: np.ndarray) -> bytes:
  return struct.pack(">BBBB", 0, 0, 8, data.ndim) + struct.pack(f">{data.ndim}I", *data.shape) \
      + data.astype(np.uint8).tobytes()


def _write(folder, rng, n_train=12, n_test=5, gz=False):
  folder.mkdir(parents=True, exist_ok=True)
  arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28)),
            "y_train": rng.integers(0, 10, n_train),
            "x_test": rng.integers(0, 256, (n_test, 28, 28)),
            "y_test": rng.integers(0, 10, n_test)}
  for key, stem in mnist.IDX_FILES.items():
    raw = _idx(arrays[key])
    if gz:
      (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
    else:
      (folder / stem).write_bytes(raw)
  return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_reads_idx_files(tmp_path, gz):
  arrays = _write(tmp_path / "mnist", np.random.default_rng(0), gz=gz)
  ds = mnist.load_mnist(tmp_path / "mnist")
  assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_train.dtype == np.uint8
  assert ds.y_test.dtype == np.int32 and ds.num_classes == 10 and ds.name == "mnist"
  np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
  np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_torchvision_raw_layout(tmp_path):
  _write(tmp_path / "MNIST" / "raw", np.random.default_rng(1))
  assert mnist.load_mnist(tmp_path).num_train == 12


def test_bad_files_name_the_file(tmp_path):
  folder = tmp_path / "m"
  _write(folder, np.random.default_rng(2))
  path = folder / "t10k-images-idx3-ubyte"
  raw = path.read_bytes()
  path.write_bytes(raw[:-7])
  with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte holds .* truncated"):
    mnist.load_mnist(folder)
  path.write_bytes(b"\x00\x00\x0d\x03" + raw[4:])
  with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte stores IDX type 0x0d"):
    mnist.load_mnist(folder)
  path.write_bytes(b"GIF89a")
  with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte does not start with an IDX"):
    mnist.load_mnist(folder)
  path.write_bytes(_idx(np.zeros((4, 28, 28))))
  with pytest.raises(DataError, match=r"5 test labels for 4 images"):
    mnist.load_mnist(folder)
  path.unlink()
  with pytest.raises(DataError, match=r"lacks t10k-images-idx3-ubyte"):
    mnist.load_mnist(folder)
  with pytest.raises(DataError, match=r"is not a folder"):
    mnist.load_mnist(tmp_path / "missing", source="folder")
