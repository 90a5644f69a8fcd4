"""Converted-dataset caches (``np.savez`` files) as memory maps: reading a batch reads its rows.

* ``memory_map_npz``: every array of an uncompressed ``.npz`` by name, the non-empty ones as
  read-only ``np.memmap``s (``np.load(mmap_mode=...)`` maps only ``.npy`` files). Each mapped
  member's bytes are checked against the CRC-32 its zip entry records (``np.load`` checks it on
  every read; a map never would), so a damaged file fails here with ``zipfile.BadZipFile``
  instead of training on flipped bytes (about 1 s per GB).

The loaders use it for the host path of ``data.placement`` (``load_dataset(...,
memory_map=True)``), so that a dataset larger than the host's memory can be streamed; NumPy only.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib

import numpy as np

_LOCAL_HEADER = b"PK\x03\x04"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


_CHUNK = 16 << 20


def check_crc(f, info: zipfile.ZipInfo, data_offset: int, path) -> None:
  """Raise ``zipfile.BadZipFile`` if the stored member ``info`` (its bytes start at
  ``data_offset`` of the open file ``f``) does not match its recorded CRC-32."""
  f.seek(data_offset)
  crc, left = 0, info.compress_size
  while left > 0:
    chunk = f.read(min(_CHUNK, left))
    if not chunk:
      raise zipfile.BadZipFile(f"{info.filename} is truncated ({left} bytes missing)")
    crc = zlib.crc32(chunk, crc)
    left -= len(chunk)
  if crc != info.CRC:
    raise zipfile.BadZipFile(f"{info.filename} fails its CRC-32 check (recorded "
                             f"{info.CRC:08x}, read {crc:08x})")


def memory_map_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every array of an uncompressed ``.npz`` (``np.savez``) by name, the non-empty ones as
  read-only ``np.memmap``s, so that reading a batch reads only its rows from the file."""
  out = {}
  with open(path, "rb") as f, zipfile.ZipFile(f) as z:
    for info in z.infolist():
      name = info.filename.removesuffix(".npy")
      if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {info.filename} is compressed (np.savez_compressed), so it "
                         f"cannot be memory-mapped: write the file with np.savez")
      f.seek(info.header_offset)
      local = f.read(30)
      if local[:4] != _LOCAL_HEADER:
        raise ValueError(f"{path}: {info.filename} has no zip local header: the file is corrupt")
      name_len, extra_len = struct.unpack("<HH", local[26:30])
      data_offset = info.header_offset + 30 + name_len + extra_len
      f.seek(data_offset)
      version = np.lib.format.read_magic(f)
      if version not in _HEADER_READERS:
        raise ValueError(f"{path}: {info.filename} is .npy format {version}, not 1.0 or 2.0")
      shape, fortran_order, dtype = _HEADER_READERS[version](f)
      if dtype.hasobject or not shape or 0 in shape:   # nothing worth mapping
        with z.open(info) as member:
          out[name] = np.lib.format.read_array(member, allow_pickle=False)
        continue
      offset = f.tell()
      check_crc(f, info, data_offset, path)
      out[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape,
                            order="F" if fortran_order else "C", offset=offset)
  return out
