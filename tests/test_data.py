"""Tests of the dataset loaders, validation and data order (spec §7.4)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import sys
import tarfile
import threading

import hypothesis
import hypothesis.strategies as st
import ml_collections
import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib
from ei_snn_jax import data


def _cfg(**overrides) -> ml_collections.ConfigDict:
  c = config_lib.base_config().data
  for k, v in overrides.items():
    c[k] = v
  return c


def _arrays(n_train=20, n_test=10, num_classes=10, seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {
      "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
      "y_train": (np.arange(n_train) % num_classes).astype(np.uint8),
      "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
      "y_test": (np.arange(n_test) % num_classes).astype(np.int64),
  }


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def _one_line_error(match: str, fn, *args, **kwargs) -> str:
  with pytest.raises(data.DataError, match=match) as e:
    fn(*args, **kwargs)
  msg = str(e.value)
  assert "\n" not in msg and len(msg) < 700, msg
  return msg


# --------------------------------------------------------------------------------------------
# arrays source
# --------------------------------------------------------------------------------------------


def test_arrays_npz_round_trip(tmp_path):
  a = _arrays()
  p = _write_npz(tmp_path / "d.npz", **a)
  ds = data.load_dataset(_cfg(source="arrays", path=str(p)))
  assert isinstance(ds, data.Dataset) and ds.name == "cifar10" and ds.num_classes == 10
  for k in ("x_train", "x_test"):
    assert getattr(ds, k).dtype == np.uint8
    np.testing.assert_array_equal(getattr(ds, k), a[k])
  for k in ("y_train", "y_test"):
    assert getattr(ds, k).dtype == np.int32
    np.testing.assert_array_equal(getattr(ds, k), a[k])
  # "auto" with data.path set uses the arrays too.
  ds2 = data.load_dataset(_cfg(path=str(p), cache_dir=str(tmp_path / "cache")))
  np.testing.assert_array_equal(ds2.x_train, a["x_train"])


def test_arrays_directory_forms(tmp_path):
  a = _arrays(seed=1)
  d1 = tmp_path / "npy"
  d1.mkdir()
  for k, v in a.items():
    np.save(d1 / f"{k}.npy", v)
  ds = data.load_dataset(_cfg(source="arrays", path=str(d1)))
  np.testing.assert_array_equal(ds.x_test, a["x_test"])
  d2 = tmp_path / "onenpz"
  d2.mkdir()
  _write_npz(d2 / "whatever.npz", **a)
  ds = data.load_dataset(_cfg(source="arrays", path=str(d2)))
  np.testing.assert_array_equal(ds.y_train, a["y_train"])


def test_subsets_and_float_images(tmp_path):
  a = _arrays(n_train=30, n_test=12)
  a["x_train"] = a["x_train"].astype(np.float32) / 255.0       # float in [0, 1] is converted
  a["y_test"] = a["y_test"].reshape(-1, 1)                     # Keras-style (N, 1) labels
  p = _write_npz(tmp_path / "d.npz", **a)
  ds = data.load_dataset(_cfg(source="arrays", path=str(p), train_subset=7, test_subset=5))
  assert ds.x_train.shape == (7, 32, 32, 3) and ds.y_test.shape == (5,)
  np.testing.assert_array_equal(ds.x_train, np.round(a["x_train"][:7] * 255).astype(np.uint8))
  np.testing.assert_array_equal(ds.y_test, a["y_test"][:5, 0])
  with pytest.raises(data.DataError, match="train_subset"):
    data.load_dataset(_cfg(source="arrays", path=str(p), train_subset=-1))


def _bad(**changes):
  a = _arrays()
  for k, v in changes.items():
    if v is None:
      del a[k]
    else:
      a[k] = v(a[k]) if callable(v) else v
  return a


BAD_CASES = {
    "missing key": (_bad(y_test=None), r"lacks key\(s\) y_test"),
    "wrong shape": (_bad(x_train=lambda x: x[:, :30]), r"x_train has shape \(20, 30, 32, 3\)"),
    "nchw": (_bad(x_test=lambda x: x.transpose(0, 3, 1, 2)), r"NCHW"),
    "rank": (_bad(x_train=lambda x: x.reshape(20, -1)), r"x_train has shape \(20, 3072\)"),
    "wrong dtype": (_bad(x_train=lambda x: x.astype(np.int16)), r"x_train has dtype int16"),
    "float out of range": (_bad(x_test=lambda x: x.astype(np.float32)), r"x_test is float32"),
    "nan pixels": (_bad(x_test=lambda x: np.where(np.arange(32)[:, None, None] == 3, np.nan,
                                                  x / 255.0)), r"x_test contains .* NaN"),
    "labels out of range": (_bad(y_train=lambda y: y + 5), r"y_train labels lie in \[5, 14\]"),
    "negative labels": (_bad(y_test=lambda y: y.astype(np.int64) - 1), r"y_test labels"),
    "float labels": (_bad(y_train=lambda y: y.astype(np.float32)), r"y_train has dtype float32"),
    "one-hot labels": (_bad(y_train=lambda y: np.eye(10)[y].astype(np.int64)), r"one-hot"),
    "length mismatch": (_bad(y_train=lambda y: y[:-1]), r"19 labels but the images have 20"),
    "empty split": (_bad(x_test=lambda x: x[:0], y_test=lambda y: y[:0]), r"x_test is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_arrays_raise_data_error(tmp_path, case):
  arrays, match = BAD_CASES[case]
  p = _write_npz(tmp_path / "bad.npz", **arrays)
  msg = _one_line_error(match, data.load_dataset, _cfg(source="arrays", path=str(p)))
  assert str(p) in msg


def test_bad_paths_raise_data_error(tmp_path):
  msg = _one_line_error("does not exist", data.load_dataset,
                        _cfg(source="arrays", path=str(tmp_path / "nope.npz")))
  assert "rebuild_cifar10.py" in msg
  _one_line_error("needs data.path", data.load_dataset, _cfg(source="arrays"))
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip file at all")
  msg = _one_line_error("is not a NumPy .npz archive", data.load_dataset,
                        _cfg(source="arrays", path=str(junk)))
  assert "pickled" not in msg
  empty_dir = tmp_path / "empty"
  empty_dir.mkdir()
  _one_line_error("holds neither", data.load_dataset, _cfg(source="arrays", path=str(empty_dir)))
  part = tmp_path / "part"
  part.mkdir()
  np.save(part / "x_train.npy", _arrays()["x_train"])
  _one_line_error("lacks y_train.npy", data.load_dataset, _cfg(source="arrays", path=str(part)))
  _one_line_error("data.source 'nope'", data.load_dataset, _cfg(source="nope"))
  _one_line_error("data.name 'imagenet'", data.load_dataset, _cfg(name="imagenet"))


def test_compact_file_is_detected(tmp_path):
  p = _write_npz(tmp_path / "cifar10_compact.npz", format=np.array(data.COMPACT_FORMAT),
                 jpeg=np.zeros(3, np.uint8), y_train=np.zeros(2, np.uint8))
  msg = _one_line_error("compact CIFAR-10", data.load_dataset, _cfg(source="arrays", path=str(p)))
  assert "rebuild_cifar10.py" in msg and "rebuild_cifar10_from_compact" in msg
  _one_line_error("compact CIFAR-10", data.load_dataset,
                  _cfg(source="arrays", path=str(tmp_path)))


# --------------------------------------------------------------------------------------------
# synthetic source
# --------------------------------------------------------------------------------------------


def test_synthetic_cifar10_and_cifar100():
  ds = data.load_dataset(_cfg(name="synthetic", source="auto"), seed=3)
  assert ds.num_classes == 10 and ds.x_train.shape == (512, 32, 32, 3)
  assert ds.x_test.shape == (256, 32, 32, 3) and ds.x_train.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(ds.y_train), 51 + (np.arange(10) < 2))  # 512 = 51*10+2
  same = data.load_dataset(_cfg(name="synthetic", source="synthetic"), seed=3)
  np.testing.assert_array_equal(ds.x_train, same.x_train)
  other = data.load_dataset(_cfg(name="synthetic", source="synthetic"), seed=4)
  assert not np.array_equal(ds.x_train, other.x_train)

  c100 = data.load_dataset(_cfg(name="cifar100", source="synthetic", synthetic_train_size=1000,
                                synthetic_test_size=300))
  assert c100.num_classes == 100 and c100.name == "cifar100"
  assert c100.y_train.dtype == np.int32 and set(np.unique(c100.y_train)) == set(range(100))
  assert c100.y_test.min() >= 0 and c100.y_test.max() < 100
  data.validate_arrays(c100.x_train, c100.y_train, c100.x_test, c100.y_test, 100, "synthetic")


def test_synthetic_is_learnable():
  # A nearest-class-mean classifier on the raw pixels must beat chance by far.
  ds = data.load_dataset(_cfg(name="synthetic", source="synthetic"), seed=0)
  xtr = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
  xte = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float32)
  means = np.stack([xtr[ds.y_train == k].mean(0) for k in range(ds.num_classes)])
  pred = np.argmin(((xte[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
  assert (pred == ds.y_test).mean() > 0.9


# --------------------------------------------------------------------------------------------
# tfds source
# --------------------------------------------------------------------------------------------


def test_tfds_missing_raises_data_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)   # import -> ImportError
  msg = _one_line_error("tensorflow-datasets", data.load_dataset,
                        _cfg(source="tfds", cache_dir=str(tmp_path)))
  assert "pip install tensorflow-datasets tensorflow-cpu importlib_resources" in msg


def test_tfds_source_with_fake_module(tmp_path, monkeypatch):
  a = _arrays(n_train=12, n_test=6)
  calls = []

  class FakeTfds:
    @staticmethod
    def load(name, split, batch_size, as_supervised, download, data_dir=None):
      calls.append((name, tuple(split), batch_size, data_dir))
      return ((a["x_train"], a["y_train"]), (a["x_test"], a["y_test"]))

    @staticmethod
    def as_numpy(t):
      return t

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", FakeTfds)
  cfg = _cfg(source="tfds", cache_dir=str(tmp_path / "c"), tfds_data_dir=str(tmp_path / "t"))
  ds = data.load_dataset(cfg)
  np.testing.assert_array_equal(ds.x_train, a["x_train"])
  assert calls == [("cifar10", ("train", "test"), -1, str(tmp_path / "t"))]
  assert (tmp_path / "c" / "cifar10.npz").is_file()             # cached
  ds = data.load_dataset(cfg)                                   # second time: from the cache
  assert len(calls) == 1
  np.testing.assert_array_equal(ds.y_test, a["y_test"])


# --------------------------------------------------------------------------------------------
# download source (local HTTP server)
# --------------------------------------------------------------------------------------------


def _pickled(d) -> bytes:
  return pickle.dumps(d, protocol=2)


def _tiny_archive(path, name: str, per_batch: int = 3, seed: int = 0):
  """A cifar-{10,100}-python.tar.gz with the official layout; returns (bytes' md5, arrays)."""
  rng = np.random.default_rng(seed)
  members, xs, ys = {}, {"train": [], "test": []}, {"train": []}
  ys["test"] = []
  if name == "cifar10":
    folder, label_key, classes = "cifar-10-batches-py", b"labels", 10
    batches = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
  else:
    folder, label_key, classes = "cifar-100-python", b"fine_labels", 100
    batches = [("train", "train"), ("test", "test")]
  for member, split in batches:
    flat = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, per_batch)]
    d = {b"batch_label": b"x", b"data": flat, label_key: labels}
    if name == "cifar100":
      d[b"coarse_labels"] = [v // 5 for v in labels]
    members[f"{folder}/{member}"] = _pickled(d)
    xs[split].append(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    ys[split].append(np.array(labels))
  members[f"{folder}/batches.meta"] = _pickled({b"label_names": []})
  with tarfile.open(path, "w:gz") as tar:
    for n, b in members.items():
      info = tarfile.TarInfo(n)
      info.size = len(b)
      tar.addfile(info, io.BytesIO(b))
  md5 = hashlib.md5(path.read_bytes()).hexdigest()
  return md5, {k: np.concatenate(v) for k, v in xs.items()}, {k: np.concatenate(v)
                                                              for k, v in ys.items()}


@pytest.fixture
def http_dir(tmp_path):
  """Serve tmp_path/'www' on 127.0.0.1 (random port) from a thread; yields (dir, base URL)."""
  root = tmp_path / "www"
  root.mkdir()

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  try:
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_download_convert_and_cache(tmp_path, http_dir, monkeypatch, name):
  root, base = http_dir
  fname = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
  md5, xs, ys = _tiny_archive(root / fname, name)
  monkeypatch.setitem(data.DOWNLOAD_URLS, name, f"{base}/{fname}")
  monkeypatch.setitem(data.DOWNLOAD_MD5, name, md5)
  cache = tmp_path / "cache"
  ds = data.load_dataset(_cfg(name=name, source="download", cache_dir=str(cache)))
  assert ds.num_classes == (10 if name == "cifar10" else 100)
  np.testing.assert_array_equal(ds.x_train, xs["train"])
  np.testing.assert_array_equal(ds.y_train, ys["train"])
  np.testing.assert_array_equal(ds.x_test, xs["test"])
  np.testing.assert_array_equal(ds.y_test, ys["test"])
  assert ds.x_train.shape == ((15 if name == "cifar10" else 3), 32, 32, 3)
  assert (cache / f"{name}.npz").is_file()
  # Next time: no network (the server no longer has the file), via "download" and "auto".
  (root / fname).unlink()
  for source in ("download", "auto"):
    again = data.load_dataset(_cfg(name=name, source=source, cache_dir=str(cache)))
    np.testing.assert_array_equal(again.x_train, xs["train"])


def test_download_bad_checksum_leaves_no_cache(tmp_path, http_dir, monkeypatch):
  root, base = http_dir
  _tiny_archive(root / "cifar-10-python.tar.gz", "cifar10")
  monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", f"{base}/cifar-10-python.tar.gz")
  monkeypatch.setitem(data.DOWNLOAD_MD5, "cifar10", "0" * 32)
  cache = tmp_path / "cache"
  _one_line_error("md5", data.load_dataset, _cfg(source="download", cache_dir=str(cache)))
  assert list(cache.iterdir()) == []


def test_download_corrupt_archive_and_http_errors(tmp_path, http_dir, monkeypatch):
  root, base = http_dir
  bad = root / "cifar-10-python.tar.gz"
  bad.write_bytes(b"this is not gzip")
  monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", f"{base}/cifar-10-python.tar.gz")
  monkeypatch.setitem(data.DOWNLOAD_MD5, "cifar10", hashlib.md5(bad.read_bytes()).hexdigest())
  cache = tmp_path / "cache"
  _one_line_error("not a valid cifar10 python archive", data.load_dataset,
                  _cfg(source="download", cache_dir=str(cache)))
  assert not (cache / "cifar10.npz").exists()
  monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", f"{base}/missing.tar.gz")
  _one_line_error("HTTP 404", data.load_dataset, _cfg(source="download", cache_dir=str(cache)))


def test_download_offline_raises_data_error(tmp_path, monkeypatch):
  import socket
  with socket.socket() as s:        # a free port with nothing listening: connection refused
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  monkeypatch.setitem(data.DOWNLOAD_URLS, "cifar10", f"http://127.0.0.1:{port}/c.tar.gz")
  msg = _one_line_error("could not reach", data.load_dataset,
                        _cfg(source="download", cache_dir=str(tmp_path / "c")))
  assert "data.source=arrays" in msg
  assert not list((tmp_path / "c").iterdir())


# --------------------------------------------------------------------------------------------
# data order
# --------------------------------------------------------------------------------------------


def test_epoch_permutation_deterministic():
  p = data.epoch_permutation(2025, 3, 1000)
  np.testing.assert_array_equal(p, data.epoch_permutation(2025, 3, 1000))
  np.testing.assert_array_equal(np.sort(p), np.arange(1000))
  assert not np.array_equal(p, data.epoch_permutation(2025, 4, 1000))
  assert not np.array_equal(p, data.epoch_permutation(2026, 3, 1000))
  # Epoch 0 is not the stream of default_rng(seed) (that one draws the E-I init weights).
  assert not np.array_equal(data.epoch_permutation(2025, 0, 1000),
                            np.random.default_rng(2025).permutation(1000))
  p[0] = -1                                                 # callers get their own copy
  assert data.epoch_permutation(2025, 3, 1000)[0] != -1


def test_num_batches():
  assert data.num_batches(50000, 128) == 391
  assert data.num_batches(10000, 500) == 20
  assert data.num_batches(1, 128) == 1 and data.num_batches(256, 128) == 2


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(n=st.integers(1, 400), batch_size=st.integers(1, 70), seed=st.integers(0, 9),
                  epoch=st.integers(0, 5))
def test_batch_indices_cover_epoch_once(n, batch_size, seed, epoch):
  nb = data.num_batches(n, batch_size)
  seen = []
  for step in range(nb):
    idx, mask = data.batch_indices(seed, epoch, n, batch_size, step)
    assert idx.shape == (batch_size,) and mask.shape == (batch_size,)
    assert idx.dtype == np.int32 and mask.dtype == bool
    assert idx.min() >= 0 and idx.max() < n
    k = int(mask.sum())
    assert mask[:k].all() and not mask[k:].any()
    assert k == (batch_size if step < nb - 1 else n - (nb - 1) * batch_size)
    seen.append(idx[mask])
  seen = np.concatenate(seen)
  np.testing.assert_array_equal(seen, data.epoch_permutation(seed, epoch, n))
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))
  resumed = list(data.epoch_batches(seed, epoch, n, batch_size, start_step=nb - 1))
  np.testing.assert_array_equal(resumed[0][0], data.batch_indices(seed, epoch, n, batch_size,
                                                                  nb - 1)[0])


def test_eval_batches_in_order():
  got = list(data.eval_batches(10, 4))
  assert len(got) == 3
  idx = np.concatenate([i[m] for i, m in got])
  np.testing.assert_array_equal(idx, np.arange(10))
  last_idx, last_mask = got[-1]
  assert last_idx.shape == (4,) and last_mask.tolist() == [True, True, False, False]
  with pytest.raises(ValueError):
    data.batch_indices(0, 0, 10, 4, 3)


# --------------------------------------------------------------------------------------------
# the real CIFAR-10 (rebuilt from ../shared/data once per session)
# --------------------------------------------------------------------------------------------


def test_real_cifar10(cifar10_npz):
  ds = data.load_dataset(_cfg(source="arrays", path=str(cifar10_npz)))
  assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.full(10, 5000))
  np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 1000))
  # Canonical order: frog, truck, truck, deer, automobile, ...
  np.testing.assert_array_equal(ds.y_train[:5], [6, 9, 9, 4, 1])
  # The rebuild is cached: a second call returns the same file without running the script.
  assert data.rebuild_cifar10_from_compact("/nonexistent/compact.npz", cifar10_npz) == cifar10_npz
  sub = data.load_dataset(_cfg(source="arrays", path=str(cifar10_npz), train_subset=1000,
                               test_subset=100))
  np.testing.assert_array_equal(sub.x_train, ds.x_train[:1000])
  assert sub.x_test.shape[0] == 100


def test_rebuild_errors(tmp_path):
  _one_line_error("does not exist", data.rebuild_cifar10_from_compact,
                  tmp_path / "nope.npz", tmp_path / "out.npz")
  bad = tmp_path / "cifar10_compact.npz"
  np.savez(bad, format=np.array("something else"))
  (tmp_path / "rebuild_cifar10.py").write_text("import sys\nsys.exit('rebuild_cifar10: boom')\n")
  _one_line_error("boom", data.rebuild_cifar10_from_compact, bad, tmp_path / "out.npz")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10_compact.npz",
                                                        "rebuild_cifar10.py"]


# ---------------------------------------------------------------------------------------------
# memory_map=True (the host path of data.placement): cached arrays stay in their files.
# ---------------------------------------------------------------------------------------------

def _is_mapped(a) -> bool:
  """Whether ``a`` is (a view of) an ``np.memmap``."""
  while a is not None:
    if isinstance(a, np.memmap):
      return True
    a = a.base
  return False


def _images(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def test_arrays_npz_and_npy_dir_are_mapped_only_when_asked(tmp_path):
  x, y = _images(12, (32, 32, 3)), np.arange(12) % 10
  np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
  (tmp_path / "dir").mkdir()
  for k, v in (("x_train", x), ("y_train", y), ("x_test", x[:5]), ("y_test", y[:5])):
    np.save(tmp_path / "dir" / f"{k}.npy", v)
  for path in (tmp_path / "a.npz", tmp_path / "dir"):
    mapped = data.load_arrays(path, 10, memory_map=True)
    read = data.load_arrays(path, 10)
    assert [_is_mapped(a) for a in mapped] == [True, False, True, False]   # labels: int32 copies
    assert not any(_is_mapped(a) for a in read)
    for a, b in zip(mapped, read):
      np.testing.assert_array_equal(a, b)
  ds = data.load_dataset(_cfg(source="arrays", path=str(tmp_path / "a.npz"), train_subset=10),
                         memory_map=True)
  assert _is_mapped(ds.x_train) and ds.x_train.shape[0] == 10
  np.testing.assert_array_equal(ds.x_train, x[:10])
  # A compressed .npz cannot be mapped: it is read, with a warning.
  np.savez_compressed(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
  fallback = data.load_arrays(tmp_path / "c.npz", 10, memory_map=True)
  assert not _is_mapped(fallback[0])
  np.testing.assert_array_equal(fallback[0], x)


def test_tiny_imagenet_and_dvs_caches_are_mapped_when_asked(tmp_path):
  from ei_snn_jax.data import cache, dvs, tiny_imagenet
  x, y = _images(6, (64, 64, 3)), np.arange(6)
  cache.save_npz_atomic(tmp_path / tiny_imagenet.CACHE_NAME,
                        format=np.asarray(tiny_imagenet.CACHE_FORMAT), wnids=np.asarray(["a"]),
                        x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
  for memory_map in (True, False):
    ds = tiny_imagenet.load_tiny_imagenet(None, cache_dir=tmp_path, memory_map=memory_map)
    assert _is_mapped(ds.x_train) == _is_mapped(ds.x_test) == memory_map
    np.testing.assert_array_equal(ds.x_train, x)
    assert ds.y_train.dtype == np.int32
  T = 2
  events = _images(4, (T, 128, 128, 2))
  cache.save_npz_atomic(tmp_path / f"cifar10_dvs_T{T}.npz", x_train=events,
                        y_train=np.arange(4), x_test=events[:1], y_test=np.arange(1),
                        format=np.asarray(dvs.CACHE_FORMAT), T=np.asarray(T))
  for memory_map in (True, False):
    ds = dvs.load_cifar10_dvs(None, T, cache_dir=tmp_path, memory_map=memory_map)
    assert _is_mapped(ds.x_train) == memory_map
    np.testing.assert_array_equal(ds.x_train, events)
