"""Reads a PyTorch `torch.save` file (the zip format of torch >= 1.6) into NumPy arrays, without torch.

A .pth file is a zip archive: `<name>/data.pkl` pickles the object, each tensor as a
call of torch._utils._rebuild_tensor_v2 on a persistent storage id
('storage', <dtype>Storage, key, location, numel) whose bytes are `<name>/data/<key>`.
The unpickler here resolves only those names (and OrderedDict); any other class in the
file becomes an inert `Unknown` record instead of being imported or executed.
"""

import collections
import pickle
import zipfile
from typing import Any, Dict

import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class Unknown:
  """A class the checkpoint names that this reader does not import (e.g. argparse.Namespace): kept inert."""
  name = "?"

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return super().__new__(cls)

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"Unknown({self.name})"


def _unknown(name: str) -> type:
  return type("Unknown", (Unknown,), {"name": name})


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2 for a NumPy storage: a (copied) strided view."""
  del unused
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride))
  return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
  """Resolves tensors and OrderedDict; nothing else is imported."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    import io  # pylint: disable=import-outside-toplevel
    super().__init__(io.BytesIO(data))
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, requires_grad, hooks, *unused: data
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    return _unknown(f"{module}.{name}")

  def persistent_load(self, pid):
    kind, storage_type, key, _, numel = pid[:5]
    if kind != "storage" or storage_type not in _STORAGE_DTYPES:
      raise pickle.UnpicklingError(f"unsupported storage {storage_type!r} in the checkpoint")
    if key not in self._storages:
      dtype = np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<" if self._byteorder == "little" else ">")
      raw = self._archive.read(f"{self._prefix}data/{key}")
      self._storages[key] = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
    return self._storages[key]


def load(path: str) -> Any:
  """The object a torch.save file holds, tensors as NumPy arrays (zip format only)."""
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is not a zip-format PyTorch file (torch >= 1.6 writes those). Re-save it with "
                     "torch.save(torch.load(path), path) in a recent torch, or load it with torch.")
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("data.pkl")]
    if not pkl:
      raise ValueError(f"{path} is a zip file without data.pkl: not a torch.save checkpoint.")
    prefix = pkl[0][:-len("data.pkl")]
    byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
    return _Unpickler(archive.read(pkl[0]), archive, prefix, byteorder).load()


def state_dict(obj: Any) -> Dict[str, np.ndarray]:
  """The flat name -> array mapping in a loaded checkpoint: the object itself, or its 'model'/'state_dict' entry."""
  for key in ("model", "state_dict"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not any(isinstance(v, np.ndarray) for v in obj.values()):
    raise ValueError("The checkpoint holds no state_dict (a mapping of names to tensors), nor one under "
                     "'model' or 'state_dict'.")
  return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
