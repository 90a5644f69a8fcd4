"""AEDAT 3.1 / 2.0 readers and spikingjelly's split_by='number' integration (spec §7.4)."""

import struct

import numpy as np
import pytest

from ei_snn_jax.data import DataError, aedat, frames

AEDAT3_HEADER = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
                 b"#!END-HEADER\r\n")


def _polarity_packet(events, overflow=0):
  """A hand-packed AEDAT 3.1 polarity packet: events = [(x, y, p, t)]."""
  n = len(events)
  head = struct.pack("<HHIIIIII", 1, 1, 8, 4, overflow, n, n, n)
  body = b"".join(struct.pack("<II", (x << 17) | (y << 2) | (p << 1) | 1, t)
                  for x, y, p, t in events)
  return head + body


def test_aedat3_decodes_hand_packed_packets(tmp_path):
  # Two polarity packets and a non-polarity packet (type 2, skipped) in between.
  special = struct.pack("<HHIIIIII", 2, 1, 8, 4, 0, 1, 1, 1) + b"\x00" * 8
  raw = (AEDAT3_HEADER + _polarity_packet([(5, 7, 1, 100), (127, 0, 0, 101)]) + special
         + _polarity_packet([(0, 127, 1, 5)], overflow=1))
  path = tmp_path / "user01_lab.aedat"
  path.write_bytes(raw)
  ev = aedat.read_aedat3(path)
  assert ev.x.tolist() == [5, 127, 0]
  assert ev.y.tolist() == [7, 0, 127]
  assert ev.p.tolist() == [1, 0, 1]
  assert ev.t.tolist() == [100, 101, 5 + (1 << 31)]


def test_aedat3_writer_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  n = 1000
  ev = aedat.Events(t=np.arange(n, dtype=np.int64) * 3, x=rng.integers(0, 128, n),
                    y=rng.integers(0, 128, n), p=rng.integers(0, 2, n))
  back = aedat.read_aedat3(aedat.write_aedat3(tmp_path / "a.aedat", ev, packet_size=97))
  for k in "txyp":
    np.testing.assert_array_equal(getattr(back, k), getattr(ev, k))


def test_aedat2_cifar10dvs_orientation(tmp_path):
  # address: y_raw in bits 8..14, x_raw in bits 1..7, polarity bit 0; big-endian pairs.
  pairs = [((3 << 8) | (10 << 1) | 1, 42), ((120 << 8) | (0 << 1) | 0, 43)]
  raw = (b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"
         + b"".join(struct.pack(">II", a, t) for a, t in pairs))
  path = tmp_path / "cifar10_cat_0.aedat"
  path.write_bytes(raw)
  ev = aedat.read_aedat2_cifar10dvs(path)
  assert ev.x.tolist() == [127 - 3, 127 - 120]      # x = 127 - y_raw
  assert ev.y.tolist() == [127 - 10, 127 - 0]       # y = 127 - x_raw
  assert ev.p.tolist() == [0, 1]                    # p = 1 - polarity bit
  assert ev.t.tolist() == [42, 43]
  back = aedat.read_aedat2_cifar10dvs(aedat.write_aedat2_cifar10dvs(tmp_path / "w.aedat", ev))
  for k in "txyp":
    np.testing.assert_array_equal(getattr(back, k), getattr(ev, k))


def test_split_by_number_hand_example():
  # N = 7 events, T = 3: floor(7/3) = 2 events per frame, the last frame takes the rest.
  j_l, j_r = frames.split_by_number(7, 3)
  assert j_l.tolist() == [0, 2, 4] and j_r.tolist() == [2, 4, 7]
  # Fewer events than frames: every frame but the last is empty.
  j_l, j_r = frames.split_by_number(2, 4)
  assert j_l.tolist() == [0, 0, 0, 0] and j_r.tolist() == [0, 0, 0, 2]


def test_integrate_by_number_hand_computed():
  # 7 events on a 2x3 sensor (H=2, W=3); (x, y, p) per event, in file order.
  xs = [0, 2, 0, 0, 1, 1, 1]
  ys = [0, 1, 0, 0, 1, 1, 0]
  ps = [1, 0, 1, 0, 0, 0, 1]
  ev = aedat.Events(t=np.arange(7), x=np.array(xs), y=np.array(ys), p=np.array(ps))
  out = frames.integrate_by_number(ev, T=3, height=2, width=3)
  assert out.shape == (3, 2, 3, 2)                  # (T, H, W, polarity)
  expected = np.zeros((3, 2, 3, 2), int)
  # frame 0 = events 0, 1: (x0,y0,p1) and (x2,y1,p0)
  expected[0, 0, 0, 1] = 1
  expected[0, 1, 2, 0] = 1
  # frame 1 = events 2, 3: (x0,y0,p1) and (x0,y0,p0)
  expected[1, 0, 0, 1] = 1
  expected[1, 0, 0, 0] = 1
  # frame 2 = events 4, 5, 6: (x1,y1,p0) twice -> count 2 (not clipped), (x1,y0,p1)
  expected[2, 1, 1, 0] = 2
  expected[2, 0, 1, 1] = 1
  np.testing.assert_array_equal(out, expected)


def test_integrate_matches_definition_on_random_events():
  """The documented definition as plain loops (spikingjelly's j_l / j_r and indicator sum)."""
  rng = np.random.default_rng(1)
  for n, T in [(0, 4), (3, 5), (100, 7), (1001, 10)]:
    ev = aedat.Events(t=np.arange(n), x=rng.integers(0, 6, n), y=rng.integers(0, 5, n),
                      p=rng.integers(0, 2, n))
    ref = np.zeros((T, 2, 5, 6))
    di = n // T
    for j in range(T):
      lo, hi = di * j, (di * (j + 1) if j < T - 1 else n)
      for i in range(lo, hi):
        ref[j, int(ev.p[i] != 0), ev.y[i], ev.x[i]] += 1
    got = frames.integrate_by_number(ev, T, 5, 6)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), ref)


def test_count_dtype_never_clips():
  assert frames.count_dtype(255) == np.uint8
  assert frames.count_dtype(256) == np.uint16
  assert frames.count_dtype(70000) == np.uint32


def test_truncated_aedat3_names_the_file(tmp_path):
  raw = AEDAT3_HEADER + _polarity_packet([(1, 2, 1, 3), (4, 5, 0, 6)])
  path = tmp_path / "user02_led.aedat"
  path.write_bytes(raw[:-5])
  with pytest.raises(DataError, match=r"user02_led\.aedat.*truncated"):
    aedat.read_aedat3(path)
  path.write_bytes(raw[:len(AEDAT3_HEADER) + 10])        # cut inside the packet header
  with pytest.raises(DataError, match=r"user02_led\.aedat.*truncated packet header"):
    aedat.read_aedat3(path)


def test_aedat3_without_end_header_or_magic(tmp_path):
  path = tmp_path / "x.aedat"
  path.write_bytes(b"#!AER-DAT3.1\r\n#Format: RAW\r\n")
  with pytest.raises(DataError, match=r"x\.aedat.*END-HEADER"):
    aedat.read_aedat3(path)
  path.write_bytes(b"#!AER-DAT2.0\r\n")
  with pytest.raises(DataError, match=r"x\.aedat.*not an AEDAT 3\.1"):
    aedat.read_aedat3(path)


def test_truncated_aedat2_names_the_file(tmp_path):
  path = tmp_path / "cifar10_dog_3.aedat"
  path.write_bytes(b"#!AER-DAT2.0\r\n" + struct.pack(">II", 1, 2) + b"\x00\x01\x02")
  with pytest.raises(DataError, match=r"cifar10_dog_3\.aedat.*truncated"):
    aedat.read_aedat2_cifar10dvs(path)


def test_out_of_sensor_events_are_an_error(tmp_path):
  ev = aedat.Events(t=np.arange(2), x=np.array([0, 200]), y=np.array([0, 1]), p=np.array([0, 1]))
  with pytest.raises(DataError, match=r"bad\.aedat.*outside the 128x128 sensor"):
    frames.integrate_by_number(ev, 2, 128, 128, tmp_path / "bad.aedat")


def test_read_frames_npz(tmp_path):
  counts = np.random.default_rng(2).integers(0, 9, (4, 2, 8, 8))
  np.savez_compressed(tmp_path / "a.npz", frames=counts.astype(np.float64))
  got = frames.read_frames_npz(tmp_path / "a.npz", 4, 8, 8)
  np.testing.assert_array_equal(got, counts.transpose(0, 2, 3, 1))
  with pytest.raises(DataError, match=r"a\.npz.*frames_number_5_split_by_number"):
    frames.read_frames_npz(tmp_path / "a.npz", 5, 8, 8)
  np.savez(tmp_path / "b.npz", x=counts)
  with pytest.raises(DataError, match=r"b\.npz has no 'frames'"):
    frames.read_frames_npz(tmp_path / "b.npz", 4, 8, 8)
  (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 broken")
  with pytest.raises(DataError, match=r"c\.npz could not be read"):
    frames.read_frames_npz(tmp_path / "c.npz", 4, 8, 8)
