"""Optional TFDS reader for any supervised image builder (spec §7.4).

``tensorflow_datasets`` is imported only when called; without it (or without TensorFlow) the
call raises ``DataError`` naming the packages and the folder alternative.
"""

from __future__ import annotations

import pathlib

import numpy as np

from ei_snn_jax.data.base import DataError


def load_tfds_supervised(name: str, splits: tuple[str, str], data_dir: str | None = None,
                         folder_hint: str = "") -> tuple[np.ndarray, ...]:
  """``tfds.load(name, split=splits, as_supervised=True, batch_size=-1)`` -> numpy arrays.

  Returns (x_train, y_train, x_test, y_test) as TFDS stores them (no validation here).
  """
  alternative = f", or {folder_hint}" if folder_hint else ""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(f"data.source=tfds needs tensorflow-datasets ({e}): `pip install "
                    f"tensorflow-datasets tensorflow-cpu`{alternative}") from None
  kwargs = {}
  if data_dir:
    kwargs["data_dir"] = str(pathlib.Path(data_dir).expanduser())
  try:
    train, test = tfds.load(name, split=list(splits), batch_size=-1, as_supervised=True,
                            **kwargs)
    (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
  except ImportError as e:
    raise DataError(f"tfds.load({name!r}) needs tensorflow ({e}): `pip install tensorflow-cpu`"
                    f"{alternative}") from None
  except Exception as e:  # unknown builder, network, TF errors: one line
    first = str(e).splitlines()[0] if str(e) else ""
    raise DataError(f"tfds.load({name!r}) failed ({e.__class__.__name__}: {first}): check the "
                    f"builder name and data.tfds_data_dir{alternative}") from None
  return np.asarray(x_train), np.asarray(y_train), np.asarray(x_test), np.asarray(y_test)
