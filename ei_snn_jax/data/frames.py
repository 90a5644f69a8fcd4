"""Events -> T event-count frames, as spikingjelly's ``split_by='number'`` (spec §7.4).

With N events (in file order) and T frames, spikingjelly 0.0.0.0.14
(``cal_fixed_frames_number_segment_index`` and ``integrate_events_segment_to_frame``) puts
event i into frame j where

    j_l = floor(N / T) * j,   j_r = floor(N / T) * (j + 1) for j < T - 1,   j_r = N for j = T - 1,

i.e. every frame gets floor(N / T) events and the last one also the remainder (all N events when
N < T). A frame has two polarity channels, channel 0 for p == 0 and channel 1 for p != 0, and
counts the events at each (channel, y, x): F(c, y, x) = #{i in [j_l, j_r): (c_i, y_i, x_i) =
(c, y, x)}. Counts are not clipped. Here frames are stored channels-last, (T, H, W, 2), in the
smallest unsigned integer type that holds the largest count (``count_dtype``).

spikingjelly's own integrated folders (``frames_number_<T>_split_by_number/<class>/*.npz``, key
``frames``, (T, 2, H, W) floats) are read by ``read_frames_npz``.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

from ei_snn_jax.data.aedat import Events
from ei_snn_jax.data.base import DataError

POLARITIES = 2


def split_by_number(num_events: int, T: int) -> tuple[np.ndarray, np.ndarray]:
  """Frame boundaries (j_l, j_r) of spikingjelly's split_by='number' (spec §7.4; module doc)."""
  if T <= 0:
    raise ValueError(f"T must be positive, got {T}")
  di = int(num_events) // T
  j_l = np.arange(T, dtype=np.int64) * di
  j_r = j_l + di
  j_r[-1] = int(num_events)
  return j_l, j_r


def frame_of_event(num_events: int, T: int) -> np.ndarray:
  """Frame index of every event under split_by='number' (the same split as ``split_by_number``)."""
  di = int(num_events) // T
  if di == 0:
    return np.full(int(num_events), T - 1, np.int64)
  return np.minimum(np.arange(int(num_events), dtype=np.int64) // di, T - 1)


def count_dtype(max_count: int) -> np.dtype:
  """Smallest unsigned dtype holding counts up to ``max_count`` (counts are never clipped)."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if max_count <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def integrate_by_number(events: Events, T: int, height: int, width: int,
                        source: str | os.PathLike = "events") -> np.ndarray:
  """Event counts (T, H, W, 2) int64 of spikingjelly's split_by='number' (spec §7.4).

  ``source`` names the file in the DataError raised for coordinates outside the sensor.
  """
  n = len(events)
  x = np.asarray(events.x, np.int64)
  y = np.asarray(events.y, np.int64)
  if n and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
    raise DataError(f"{source}: event coordinates x in [{x.min()}, {x.max()}], y in "
                    f"[{y.min()}, {y.max()}] fall outside the {height}x{width} sensor: the file "
                    f"is corrupt or of another camera")
  channel = (np.asarray(events.p) != 0).astype(np.int64)
  flat = ((frame_of_event(n, T) * height + y) * width + x) * POLARITIES + channel
  counts = np.bincount(flat, minlength=T * height * width * POLARITIES)
  return counts.reshape(T, height, width, POLARITIES)


def read_frames_npz(path: str | os.PathLike, T: int, height: int, width: int) -> np.ndarray:
  """One spikingjelly frames file (key ``frames``, (T, 2, H, W)) -> int64 counts (T, H, W, 2)."""
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      if "frames" not in z.files:
        raise DataError(f"{path} has no 'frames' array (keys: {', '.join(z.files) or 'none'}): "
                        f"point at spikingjelly's frames_number_<T>_split_by_number folder")
      frames = z["frames"]
  except DataError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"{path} could not be read as .npz ({e.__class__.__name__}: {e}): the file "
                    f"is truncated or not a spikingjelly frames file; re-create it") from None
  if frames.shape != (T, POLARITIES, height, width):
    raise DataError(f"{path}: frames have shape {frames.shape}, expected ({T}, 2, {height}, "
                    f"{width}): use the frames_number_{T}_split_by_number folder (model.T = {T})")
  if not np.issubdtype(frames.dtype, np.number):
    raise DataError(f"{path}: frames have dtype {frames.dtype}: expected event counts")
  rounded = np.rint(frames)
  if (rounded != frames).any() or (frames < 0).any():
    raise DataError(f"{path}: frames are not non-negative integer event counts: these are not "
                    f"spikingjelly split_by='number' frames")
  return rounded.astype(np.int64).transpose(0, 2, 3, 1)
