"""Array files of the loaders: ``.npz`` archives read, memory-mapped or written atomically.

* ``npz_arrays``: named arrays of an open ``np.load`` archive, read or mapped (``memmap``).
* ``read_cache_arrays``: the four arrays of a converted-dataset cache of a given format.
* ``save_npz_atomic``: ``np.savez`` to a temporary name, then rename (no half-written cache).
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
import zipfile
from typing import Any

import numpy as np

from ei_snn_jax.data.base import ARRAY_KEYS, DataError
from ei_snn_jax.data.memmap import memory_map_npz

log = logging.getLogger(__name__)


def npz_arrays(z: Any, path: pathlib.Path, keys: tuple[str, ...],
               memory_map: bool = False) -> list[np.ndarray]:
  """The arrays ``keys`` of the open ``np.load`` archive ``z`` of ``path``: read into memory,
  or with ``memory_map`` mapped from the file (``memory_map_npz``; a compressed file, which
  cannot be mapped, is read, with a log line)."""
  if memory_map:
    try:
      mapped = memory_map_npz(path)
      return [mapped[k] for k in keys]
    except ValueError as e:
      log.warning("%s is read into memory: %s", path, e)
  return [z[k] for k in keys]


def read_cache_arrays(path: pathlib.Path, cache_format: str, what: str,
                      memory_map: bool = False) -> dict[str, np.ndarray]:
  """The four arrays of a converted-dataset cache written with ``format=cache_format``, read
  into memory or, with ``memory_map``, mapped from the file (``npz_arrays``).

  A cache of another format, or one that cannot be read, is one ``DataError`` line saying to
  delete it (it is rebuilt from data.path). ``what`` names the cache kind in the message.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      if "format" not in z.files or str(z["format"]) != cache_format:
        raise DataError(f"{path} is not an ei_snn_jax {what} cache ({cache_format}): delete it "
                        f"so that it is rebuilt from data.path")
      return dict(zip(ARRAY_KEYS, npz_arrays(z, path, ARRAY_KEYS, memory_map)))
  except DataError:
    raise
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"cache {path} could not be read ({e.__class__.__name__}: {e}): delete it "
                    f"so that it is rebuilt from data.path") from None


def save_npz_atomic(path: pathlib.Path, **arrays: np.ndarray) -> pathlib.Path:
  """np.savez to a temporary name in the same folder, then rename (no half-written cache)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.npz", dir=path.parent)
  os.close(fd)
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path
