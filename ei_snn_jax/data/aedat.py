"""Event-camera files: AEDAT 3.1 (DVS128-Gesture) and AEDAT 2.0 (CIFAR10-DVS) (spec §7.4).

Both readers return an ``Events`` record of equal-length numpy arrays t, x, y, p in file order
(the order matters: frames are integrated by event count, ``frames.integrate_by_number``).
The decoding follows spikingjelly 0.0.0.0.14, which produced the reference's frames:

* AEDAT 3.1 (``read_aedat3``): an ASCII header of ``#`` lines ending with ``#!END-HEADER``, then
  packets of a 28-byte little-endian header (eventType u16, eventSource u16, eventSize u32,
  eventTSOffset u32, eventTSOverflow u32, eventCapacity u32, eventNumber u32, eventValid u32)
  and ``eventCapacity * eventSize`` bytes of events. Only polarity packets (type 1) are read,
  every event of the capacity (the valid bit is not checked, as in spikingjelly). A polarity
  event is two u32: data and timestamp; x = data >> 17 & 0x7FFF, y = data >> 2 & 0x7FFF,
  p = data >> 1 & 1, t = timestamp | eventTSOverflow << 31.
* AEDAT 2.0 (``read_aedat2_cifar10dvs``): ``#`` header lines, then big-endian u32 pairs
  (address, timestamp). CIFAR10-DVS addresses decode as x_raw = (a & 0xFE) >> 1,
  y_raw = (a & 0x7F00) >> 8, pol = a & 1, and spikingjelly's transposed, flipped frame is
  x = 127 - y_raw, y = 127 - x_raw, p = 1 - pol.

A truncated or malformed file raises ``DataError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import struct

import numpy as np

from ei_snn_jax.data.base import DataError

AEDAT3_PACKET_HEADER = struct.Struct("<HHIIIIII")   # 28 bytes
POLARITY_EVENT = 1
END_HEADER = b"#!END-HEADER"


@dataclasses.dataclass(frozen=True, eq=False)
class Events:
  """Events in file order: timestamps t (int64, µs), x, y (int32 pixels), p (int8 0/1)."""
  t: np.ndarray
  x: np.ndarray
  y: np.ndarray
  p: np.ndarray

  def __len__(self) -> int:
    return int(self.t.shape[0])

  def select(self, mask: np.ndarray) -> "Events":
    """The events where ``mask`` is True (order kept)."""
    return Events(self.t[mask], self.x[mask], self.y[mask], self.p[mask])


def _read_bytes(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise DataError(f"{path} could not be read ({e.__class__.__name__}: {e}): check the file "
                    f"and its permissions") from None


def _header_end(raw: bytes, path: pathlib.Path, need_end_marker: bool) -> int:
  """Offset of the first byte after the ``#`` header lines."""
  pos = 0
  while pos < len(raw) and raw[pos:pos + 1] == b"#":
    nl = raw.find(b"\n", pos)
    if nl < 0:
      raise DataError(f"{path}: the AEDAT header never ends (no newline after byte {pos}): "
                      f"the file is truncated; re-extract it from the dataset archive")
    line = raw[pos:nl + 1]
    pos = nl + 1
    if line.rstrip(b"\r\n") == END_HEADER:
      return pos
    if not need_end_marker:
      try:   # spikingjelly's AEDAT 2.0 reader stops at the first line that is not text
        line.decode()
      except UnicodeDecodeError:
        return pos - len(line)
  if need_end_marker:
    raise DataError(f"{path}: no '#!END-HEADER' line, so this is not an AEDAT 3.1 file: "
                    f"point at the DvsGesture *.aedat files")
  return pos


def read_aedat3(path: str | os.PathLike) -> Events:
  """Polarity events of an AEDAT 3.1 file such as DVS128-Gesture's (spec §7.4; module doc)."""
  path = pathlib.Path(path)
  raw = _read_bytes(path)
  if not raw.startswith(b"#!AER-DAT3"):
    first = raw[:16].split(b"\n")[0]
    raise DataError(f"{path}: first line {first!r} is not '#!AER-DAT3.1': this is not an "
                    f"AEDAT 3.1 file (DVS128-Gesture's *.aedat are)")
  pos = _header_end(raw, path, need_end_marker=True)
  data_words, ts_words, overflows = [], [], []
  size = AEDAT3_PACKET_HEADER.size
  while pos < len(raw):
    if len(raw) - pos < size:
      raise DataError(f"{path}: truncated packet header at byte {pos} ({len(raw) - pos} of "
                      f"{size} bytes): the file is cut short; re-extract it")
    (e_type, _source, e_size, _offset, e_overflow, e_capacity, _number,
     _valid) = AEDAT3_PACKET_HEADER.unpack_from(raw, pos)
    pos += size
    length = e_capacity * e_size
    if len(raw) - pos < length:
      raise DataError(f"{path}: truncated packet at byte {pos} ({len(raw) - pos} of {length} "
                      f"bytes): the file is cut short; re-extract it")
    if e_type == POLARITY_EVENT:
      if e_size < 8 or e_size % 4:
        raise DataError(f"{path}: polarity packet at byte {pos - size} has event size "
                        f"{e_size}, expected 8: the file is corrupt")
      words = np.frombuffer(raw, dtype="<u4", count=length // 4, offset=pos)
      words = words.reshape(e_capacity, e_size // 4)
      data_words.append(words[:, 0])
      ts_words.append(words[:, 1])
      overflows.append(np.full(e_capacity, e_overflow, np.int64))
    pos += length
  if data_words:
    data = np.concatenate(data_words)
    t = np.concatenate(ts_words).astype(np.int64) | (np.concatenate(overflows) << 31)
  else:
    data, t = np.zeros(0, np.uint32), np.zeros(0, np.int64)
  return Events(t=t,
                x=((data >> 17) & 0x7FFF).astype(np.int32),
                y=((data >> 2) & 0x7FFF).astype(np.int32),
                p=((data >> 1) & 1).astype(np.int8))


def read_aedat2_cifar10dvs(path: str | os.PathLike) -> Events:
  """Events of one CIFAR10-DVS AEDAT 2.0 file, in spikingjelly's orientation (spec §7.4)."""
  path = pathlib.Path(path)
  raw = _read_bytes(path)
  pos = _header_end(raw, path, need_end_marker=False)
  body = len(raw) - pos
  if body % 8:
    raise DataError(f"{path}: {body} bytes of events is not a whole number of 8-byte "
                    f"(address, timestamp) pairs: the file is truncated; re-extract it")
  words = np.frombuffer(raw, dtype=">u4", offset=pos).astype(np.uint32)
  address, timestamp = words[0::2], words[1::2]
  x_raw = (address & 0xFE) >> 1
  y_raw = (address & 0x7F00) >> 8
  polarity = address & 1
  return Events(t=timestamp.astype(np.int64),
                x=(127 - y_raw.astype(np.int32)).astype(np.int32),
                y=(127 - x_raw.astype(np.int32)).astype(np.int32),
                p=(1 - polarity.astype(np.int8)).astype(np.int8))


# --------------------------------------------------------------------------------------------
# Writers (tests and tools: synthetic files in the real formats)
# --------------------------------------------------------------------------------------------


def write_aedat3(path: str | os.PathLike, events: Events, packet_size: int = 4096,
                 ts_overflow: int = 0) -> pathlib.Path:
  """Write polarity events as an AEDAT 3.1 file readable by ``read_aedat3`` (spec §7.4)."""
  path = pathlib.Path(path)
  header = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
            b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n")
  chunks = [header]
  t = np.asarray(events.t, np.int64)
  data = ((np.asarray(events.x, np.uint32) << 17) | (np.asarray(events.y, np.uint32) << 2)
          | (np.asarray(events.p, np.uint32) << 1) | 1)
  for lo in range(0, len(t), packet_size):
    n = min(packet_size, len(t) - lo)
    chunks.append(AEDAT3_PACKET_HEADER.pack(POLARITY_EVENT, 1, 8, 4, ts_overflow, n, n, n))
    pair = np.empty((n, 2), "<u4")
    pair[:, 0] = data[lo:lo + n]
    pair[:, 1] = (t[lo:lo + n] & 0x7FFFFFFF).astype(np.uint32)
    chunks.append(pair.tobytes())
  path.write_bytes(b"".join(chunks))
  return path


def write_aedat2_cifar10dvs(path: str | os.PathLike, events: Events) -> pathlib.Path:
  """Write events (spikingjelly orientation) as a CIFAR10-DVS AEDAT 2.0 file (spec §7.4)."""
  path = pathlib.Path(path)
  x_raw = 127 - np.asarray(events.y, np.uint32)
  y_raw = 127 - np.asarray(events.x, np.uint32)
  address = (y_raw << 8) | (x_raw << 1) | (1 - np.asarray(events.p, np.uint32))
  pair = np.empty((len(events), 2), ">u4")
  pair[:, 0] = address
  pair[:, 1] = np.asarray(events.t, np.uint32)
  header = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
            b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n")
  path.write_bytes(header + pair.tobytes())
  return path
