"""Converted-dataset caches (``np.savez`` files) as memory maps: reading a batch reads its rows.

* ``memory_map_npz``: every array of an uncompressed ``.npz`` by name, the non-empty ones as
  read-only ``np.memmap``s (``np.load(mmap_mode=...)`` maps only ``.npy`` files).

The loaders use it for the host path of ``data.placement`` (``load_dataset(...,
memory_map=True)``), so that a dataset larger than the host's memory can be streamed; NumPy only.
"""

from __future__ import annotations

import os
import struct
import zipfile

import numpy as np

_LOCAL_HEADER = b"PK\x03\x04"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


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
      f.seek(info.header_offset + 30 + name_len + extra_len)
      version = np.lib.format.read_magic(f)
      if version not in _HEADER_READERS:
        raise ValueError(f"{path}: {info.filename} is .npy format {version}, not 1.0 or 2.0")
      shape, fortran_order, dtype = _HEADER_READERS[version](f)
      if dtype.hasobject or not shape or 0 in shape:   # nothing worth mapping
        with z.open(info) as member:
          out[name] = np.lib.format.read_array(member, allow_pickle=False)
        continue
      out[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape,
                            order="F" if fortran_order else "C", offset=f.tell())
  return out
