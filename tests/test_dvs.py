"""DVS128-Gesture and CIFAR10-DVS readers on small files in the real formats (spec §7.4)."""

import numpy as np
import pytest

from ei_snn_jax.data import DataError, aedat, dvs, frames

T = 4


def _events(rng, n, t0, t1):
  return aedat.Events(t=np.sort(rng.integers(t0, t1, n)).astype(np.int64),
                      x=rng.integers(0, 128, n), y=rng.integers(0, 128, n),
                      p=rng.integers(0, 2, n))


def _write_gesture(root, rng):
  """A DvsGesture folder: 2 train recordings, 1 test recording, labels incl. class 11."""
  root.mkdir(parents=True, exist_ok=True)
  recordings = {"user01_fluorescent": [(1, 0, 1000), (11, 1000, 2000), (2, 2000, 3000),
                                       (11, 3000, 4000)],
                "user02_lab": [(10, 0, 1500), (3, 1500, 2500)],
                "user24_led": [(11, 0, 700), (1, 700, 1400)]}
  for stem, rows in recordings.items():
    ev = _events(rng, 3000, 0, rows[-1][2] + 500)      # some events after the last gesture
    aedat.write_aedat3(root / f"{stem}.aedat", ev, packet_size=512)
    (root / f"{stem}_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in rows))
  (root / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_lab.aedat\n\n")
  (root / "trials_to_test.txt").write_text("user24_led.aedat\n")
  return recordings


def _expected_gesture(root, recordings, stems):
  """(sample name, folder, frames) of every sample, cut and integrated by hand."""
  out = []
  for stem in stems:
    ev = aedat.read_aedat3(root / f"{stem}.aedat")
    seen = {}
    for c, s, e in recordings[stem]:
      folder = str(c - 1)
      k = seen.get(folder, 0)
      seen[folder] = k + 1
      sel = ev.select((ev.t >= s) & (ev.t < e))
      out.append((f"{stem}_{k}.npz", folder, frames.integrate_by_number(sel, T, 128, 128)))
  # torchvision DatasetFolder: folders sorted as strings, then file names
  out.sort(key=lambda s: (sorted(str(i) for i in range(11)).index(s[1]), s[0]))
  return out


def test_gesture_from_aedat_matches_hand_cut(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "DvsGesture"
  recordings = _write_gesture(root, rng)
  ds = dvs.load_dvs128_gesture(tmp_path, T, workers=2)        # finds DvsGesture/ below
  assert ds.num_classes == 11 and ds.name == "dvs128_gesture"
  assert ds.x_train.shape == (6, T, 128, 128, 2) and ds.x_test.shape == (2, T, 128, 128, 2)
  assert ds.x_train.dtype == np.uint8
  want = _expected_gesture(root, recordings, ["user01_fluorescent", "user02_lab"])
  np.testing.assert_array_equal(ds.x_train, np.stack([w[2] for w in want]))
  # Labels: DatasetFolder index of the folder; folder "10" (class 11) has index 2.
  assert dvs.GESTURE_FOLDERS[:4] == ("0", "1", "10", "2")
  assert ds.y_train.tolist() == [dvs.GESTURE_FOLDERS.index(w[1]) for w in want]
  assert sorted(ds.y_train.tolist()) == [0, 1, 2, 2, 3, 10]
  want_test = _expected_gesture(root, recordings, ["user24_led"])
  np.testing.assert_array_equal(ds.x_test, np.stack([w[2] for w in want_test]))


def test_gesture_frames_folder_gives_the_same_arrays(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "DvsGesture"
  recordings = _write_gesture(root, rng)
  from_aedat = dvs.load_dvs128_gesture(root, T, workers=1)
  sj_root = tmp_path / "sj"
  for split, stems in (("train", ["user01_fluorescent", "user02_lab"]), ("test", ["user24_led"])):
    for folder in dvs.GESTURE_FOLDERS:
      (sj_root / dvs.frames_folder_name(T) / split / folder).mkdir(parents=True)
    for name, folder, fr in _expected_gesture(root, recordings, stems):
      np.savez_compressed(sj_root / dvs.frames_folder_name(T) / split / folder / name,
                          frames=fr.transpose(0, 3, 1, 2).astype(np.float64))
  from_frames = dvs.load_dvs128_gesture(sj_root, T)
  for k in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(from_frames, k), getattr(from_aedat, k))


def test_gesture_cache_is_written_once_and_reused(tmp_path):
  rng = np.random.default_rng(2)
  root = tmp_path / "DvsGesture"
  _write_gesture(root, rng)
  cache = tmp_path / "cache"
  first = dvs.load_dvs128_gesture(root, T, cache_dir=cache)
  assert (cache / f"dvs128_gesture_T{T}.npz").is_file()
  assert not list(cache.glob("*.tmp.npz"))
  for p in root.iterdir():
    p.unlink()
  second = dvs.load_dvs128_gesture(root, T, cache_dir=cache)
  np.testing.assert_array_equal(first.x_train, second.x_train)
  np.testing.assert_array_equal(first.y_test, second.y_test)


def test_gesture_missing_labels_names_the_csv(tmp_path):
  rng = np.random.default_rng(3)
  root = tmp_path / "DvsGesture"
  _write_gesture(root, rng)
  (root / "user02_lab_labels.csv").unlink()
  with pytest.raises(DataError, match=r"user02_lab_labels\.csv is missing"):
    dvs.load_dvs128_gesture(root, T)


def test_gesture_truncated_aedat_names_the_file(tmp_path):
  rng = np.random.default_rng(4)
  root = tmp_path / "DvsGesture"
  _write_gesture(root, rng)
  raw = (root / "user24_led.aedat").read_bytes()
  (root / "user24_led.aedat").write_bytes(raw[:-100])
  with pytest.raises(DataError, match=r"user24_led\.aedat.*truncated"):
    dvs.load_dvs128_gesture(root, T)


def test_gesture_bad_label_row_and_missing_recording(tmp_path):
  rng = np.random.default_rng(5)
  root = tmp_path / "DvsGesture"
  _write_gesture(root, rng)
  (root / "user02_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,abc,5\n")
  with pytest.raises(DataError, match=r"user02_lab_labels\.csv line 2"):
    dvs.load_dvs128_gesture(root, T)
  (root / "user02_lab.aedat").unlink()
  with pytest.raises(DataError, match=r"user02_lab\.aedat is listed in trials_to_train\.txt"):
    dvs.load_dvs128_gesture(root, T)


def test_gesture_wrong_layout(tmp_path):
  (tmp_path / "somewhere").mkdir()
  with pytest.raises(DataError, match=r"neither frames_number_4_split_by_number/ nor the raw"):
    dvs.load_dvs128_gesture(tmp_path / "somewhere", T)
  (tmp_path / "sj" / dvs.frames_folder_name(16)).mkdir(parents=True)
  with pytest.raises(DataError, match=r"found frames_number_16_split_by_number: set model\.T"):
    dvs.load_dvs128_gesture(tmp_path / "sj", T)
  with pytest.raises(DataError, match=r"does not exist"):
    dvs.load_dvs128_gesture(tmp_path / "nope", T)
  train = tmp_path / "bad" / dvs.frames_folder_name(T) / "train"
  train.mkdir(parents=True)
  with pytest.raises(DataError, match=r"lacks class folder\(s\) 0, 1, 10"):
    dvs.load_dvs128_gesture(tmp_path / "bad", T)


# --------------------------------------------------------------------------------------------
# CIFAR10-DVS
# --------------------------------------------------------------------------------------------


def _write_cifar10_dvs(root, rng, per_class=12):
  for cls in dvs.CIFAR10_DVS_CLASSES:
    (root / cls).mkdir(parents=True)
    for k in range(per_class):
      n = int(rng.integers(3, 300))
      aedat.write_aedat2_cifar10dvs(root / cls / f"cifar10_{cls}_{k}.aedat",
                                    _events(rng, n, 0, 10_000))


def test_cifar10_dvs_split_is_sorted_name_order(tmp_path):
  rng = np.random.default_rng(6)
  root = tmp_path / "extract"
  _write_cifar10_dvs(root, rng)
  ds = dvs.load_cifar10_dvs(tmp_path, T, workers=2)            # finds extract/ below
  # 12 per class: ceil(0.9 * 12) = 11 train, 1 test per class.
  assert ds.x_train.shape == (110, T, 128, 128, 2) and ds.x_test.shape == (10, T, 128, 128, 2)
  assert ds.y_train.tolist() == sorted(list(range(10)) * 11)
  assert ds.y_test.tolist() == list(range(10))
  # Sorted as strings: _0, _1, _10, _11, _2, ..., _9, so the test sample of a class is _9.
  for k, cls in enumerate(dvs.CIFAR10_DVS_CLASSES):
    ev = aedat.read_aedat2_cifar10dvs(root / cls / f"cifar10_{cls}_9.aedat")
    np.testing.assert_array_equal(ds.x_test[k], frames.integrate_by_number(ev, T, 128, 128))
  ev = aedat.read_aedat2_cifar10dvs(root / "airplane" / "cifar10_airplane_10.aedat")
  np.testing.assert_array_equal(ds.x_train[2], frames.integrate_by_number(ev, T, 128, 128))


def test_cifar10_dvs_split_rule():
  labels = np.repeat(np.arange(10), [1, 2, 9, 10, 11, 19, 20, 21, 3, 100])
  train, test = dvs.cifar10_dvs_split(labels)
  for k, n in enumerate([1, 2, 9, 10, 11, 19, 20, 21, 3, 100]):
    assert int(np.sum(labels[train] == k)) == -(-9 * n // 10)     # ceil(0.9 n)
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))


def test_cifar10_dvs_frames_folder_equals_aedat(tmp_path):
  rng = np.random.default_rng(7)
  root = tmp_path / "raw"
  _write_cifar10_dvs(root, rng, per_class=3)
  sj = tmp_path / "sj" / dvs.frames_folder_name(T)
  for cls in dvs.CIFAR10_DVS_CLASSES:
    (sj / cls).mkdir(parents=True)
    for p in (root / cls).iterdir():
      fr = frames.integrate_by_number(aedat.read_aedat2_cifar10dvs(p), T, 128, 128)
      np.savez_compressed(sj / cls / (p.stem + ".npz"), frames=fr.transpose(0, 3, 1, 2) * 1.0)
  a = dvs.load_cifar10_dvs(root, T)
  b = dvs.load_cifar10_dvs(sj, T)
  for k in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_cifar10_dvs_bad_files(tmp_path):
  rng = np.random.default_rng(8)
  root = tmp_path / "raw"
  _write_cifar10_dvs(root, rng, per_class=2)
  bad = root / "frog" / "cifar10_frog_1.aedat"
  bad.write_bytes(bad.read_bytes()[:-3])
  with pytest.raises(DataError, match=r"cifar10_frog_1\.aedat.*truncated"):
    dvs.load_cifar10_dvs(root, T)
  bad.unlink()
  for p in (root / "ship").iterdir():
    p.unlink()
  (root / "ship").rmdir()
  with pytest.raises(DataError, match=r"lacks class folder\(s\) ship"):
    dvs.load_cifar10_dvs(root, T)
