"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (gzipped IDX files)."""

import gzip
import logging
import os
import zlib
from typing import Dict, Tuple

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
  "train_images": "train-images-idx3-ubyte.gz",
  "train_labels": "train-labels-idx1-ubyte.gz",
  "test_images": "t10k-images-idx3-ubyte.gz",
  "test_labels": "t10k-labels-idx1-ubyte.gz",
}
NUM_CLASSES = 10
MISSING_HELP = (
  "Fashion-MNIST was not found in {where}. Install Debian's copy with\n"
  "    sudo apt-get install dataset-fashion-mnist\n"
  "(it installs to " + DEBIAN_DIR + "), point --config.data.data_dir at a folder holding the four "
  "*-ubyte.gz files, or, on a machine with internet access, set --config.data.allow_download=True "
  "to fall back to tfds's own `fashion_mnist` download."
)


# The validation split (config.data.holdout): VALIDATION_SIZE training images drawn once with this fixed seed
# are held out; the other 50,000 train. The draw depends on nothing else, so every run holds out the same images.
VALIDATION_SIZE = 10_000
VALIDATION_SEED = 20261207


def validation_split(num_train: int) -> Tuple[np.ndarray, np.ndarray]:
  """(train, validation) indices into the training images, both sorted: the fixed 50k/10k split."""
  if num_train <= VALIDATION_SIZE:
    raise ValueError(
      f"Fashion-MNIST's training split has {num_train} images; the validation split holds out "
      f"{VALIDATION_SIZE}: use config.data.holdout='none' with so few images."
    )
  order = np.random.default_rng(VALIDATION_SEED).permutation(num_train)
  return np.sort(order[VALIDATION_SIZE:]), np.sort(order[:VALIDATION_SIZE])


class DatasetNotFoundError(FileNotFoundError):
  """The dataset's files are missing; the message says how to get them."""


def read_idx(path: str) -> np.ndarray:
  """Reads one (gzipped) IDX file into a numpy array of its declared shape."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (EOFError, OSError, zlib.error) as e:  # truncated or corrupted download / disk
    raise ValueError(
      f"{path} is damaged ({type(e).__name__}: {e}). Reinstall it (sudo apt-get install "
      f"--reinstall dataset-fashion-mnist) or replace the file."
    ) from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} values.")
  return array.reshape(shape)


def _from_tfds() -> Dict[str, np.ndarray]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  out = {}
  for split in ("train", "test"):
    ds = tfds.as_numpy(tfds.load("fashion_mnist", split=split, batch_size=-1))
    out[f"{split}_images"], out[f"{split}_labels"] = ds["image"][..., 0], ds["label"]
  return out


def load(data_dir: str = "", allow_download: bool = False) -> Dict[str, np.ndarray]:
  """Returns train/test images [N,28,28,1] uint8 and labels [N] int32."""
  where = data_dir or DEBIAN_DIR
  paths = {k: os.path.join(where, f) for k, f in FILES.items()}
  missing = [p for p in paths.values() if not os.path.exists(p)]
  if missing:
    if not allow_download:
      raise DatasetNotFoundError(MISSING_HELP.format(where=where) + f"\nMissing: {missing}")
    logging.warning("Fashion-MNIST not in %s; downloading it with tfds.", where)
    raw = _from_tfds()
  else:
    raw = {k: read_idx(p) for k, p in paths.items()}
  out = {}
  for split in ("train", "test"):
    images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels.")
    out[f"{split}_images"] = np.ascontiguousarray(images[..., None], dtype=np.uint8)
    out[f"{split}_labels"] = labels.astype(np.int32)
  return out
