"""Reads a PyTorch `torch.save` file (the zip format of torch >= 1.6) into NumPy arrays, without torch.

A .pth file is a zip archive: `<name>/data.pkl` pickles the object, each tensor as a
call of torch._utils._rebuild_tensor_v2 on a persistent storage id
('storage', <dtype>Storage, key, location, numel) whose bytes are `<name>/data/<key>`.
The unpickler here resolves only those names (and OrderedDict); any other class in the
file becomes an inert `Unknown` record instead of being imported or executed.

Memory safety: every tensor's size, stride and offset are checked against its storage
before a view is made (a damaged or hostile file cannot make the reader return bytes
from outside the file, nor crash it); a tensor that fails the check becomes an inert
`BadTensor` that `state_dict` reports by name, and any other damage (a byte flip caught
by the zip's CRC, a truncation, an unreadable pickle) is one ValueError naming the file.
"""

import collections
import io
import pickle
import zipfile
from typing import Any, Dict

import numpy as np

_STORAGE_DTYPES = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
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


class BadTensor:
  """A tensor record whose shape does not fit its storage (or is malformed): kept inert, named by `state_dict`."""

  def __init__(self, why: str):
    self.why = why

  def __repr__(self):
    return f"BadTensor({self.why})"


def _ints(values, what: str) -> tuple:
  """A tuple of Python ints, or ValueError (a pickle can hand anything here)."""
  if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
    raise ValueError(f"its {what} {values!r} is not a tuple of integers")
  return tuple(values)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2 for a NumPy storage: a (copied) strided view, checked to lie inside the storage."""
  del unused
  try:
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
      raise ValueError("its storage is not a tensor storage")
    if not isinstance(offset, int) or isinstance(offset, bool):
      raise ValueError(f"its storage offset {offset!r} is not an integer")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
      raise ValueError(f"size {size} / stride {stride} / offset {offset} are malformed")
    if any(n == 0 for n in size):
      return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))  # the largest element index the view touches
    if last >= storage.size:
      raise ValueError(
        f"shape {size} with stride {stride} at offset {offset} needs {last + 1} elements, but its "
        f"storage holds {storage.size}"
      )
  except ValueError as e:
    return BadTensor(str(e))
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
    storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
  )
  return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
  """Resolves tensors and OrderedDict; nothing else is imported."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str):
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
    if not isinstance(pid, tuple) or len(pid) < 5:
      raise pickle.UnpicklingError(f"a malformed storage record {pid!r}")
    kind, storage_type, key, _, numel = pid[:5]
    if kind != "storage" or storage_type not in _STORAGE_DTYPES:
      raise pickle.UnpicklingError(f"unsupported storage {storage_type!r} in the checkpoint")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise pickle.UnpicklingError(f"a malformed storage record {pid!r}")
    if key not in self._storages:
      dtype = np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<" if self._byteorder == "little" else ">")
      name = f"{self._prefix}data/{key}"
      try:
        raw = self._archive.read(name)
      except KeyError:
        raise pickle.UnpicklingError(f"storage {key!r} is missing from the archive") from None
      if len(raw) < numel * dtype.itemsize:  # the record declares more than the file holds
        raise pickle.UnpicklingError(
          f"storage {key!r} holds {len(raw)} bytes, fewer than its {numel} {dtype.name} elements"
        )
      self._storages[key] = np.frombuffer(raw, dtype, count=numel).astype(dtype.newbyteorder("="))
    return self._storages[key]


def load(path: str) -> Any:
  """The object a torch.save file holds, tensors as NumPy arrays (zip format only); damage is one ValueError."""
  with open(path, "rb") as f:
    head = f.read(4)
  try:
    is_zip = zipfile.is_zipfile(path)
  except zipfile.BadZipFile:  # e.g. a flipped byte in the end record
    is_zip = False
  if not is_zip:
    if head.startswith(b"PK"):
      raise ValueError(
        f"{path} is a damaged or truncated zip file (its central directory is unreadable): copy or download it again."
      )
    if head[:1] == b"\x80":
      raise ValueError(
        f"{path} is not a zip-format PyTorch file (torch >= 1.6 writes those). Re-save it with "
        "torch.save(torch.load(path), path) in a recent torch, or load it with torch."
      )
    raise ValueError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle).")
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
      pkl = [n for n in names if n.endswith("data.pkl")]
      if not pkl:
        raise ValueError(f"{path} is a zip file without data.pkl: not a torch.save checkpoint.")
      prefix = pkl[0][: -len("data.pkl")]
      byteorder = "little"
      if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
      if byteorder not in ("little", "big"):
        raise ValueError(f"{path} declares byte order {byteorder!r}")
      return _Unpickler(archive.read(pkl[0]), archive, prefix, byteorder).load()
  except Exception as e:  # pylint: disable=broad-except  (any failure to parse is damage, never a traceback)
    if str(e).startswith(f"{path} "):
      raise
    text = str(e).strip().splitlines()
    raise ValueError(
      f"{path} is damaged ({type(e).__name__}: {text[0][:200] if text else ''}): copy or download it again."
    ) from None


def state_dict(obj: Any) -> Dict[str, np.ndarray]:
  """The flat name -> array mapping in a loaded checkpoint: the object itself, or its 'model'/'state_dict' entry."""
  for key in ("model", "state_dict"):
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not any(isinstance(v, (np.ndarray, BadTensor)) for v in obj.values()):
    raise ValueError(
      "The checkpoint holds no state_dict (a mapping of names to tensors), nor one under 'model' or 'state_dict'."
    )
  bad = {k: v.why for k, v in obj.items() if isinstance(v, BadTensor)}
  if bad:
    name, why = next(iter(bad.items()))
    raise ValueError(
      f"The checkpoint's tensor {name!r} is damaged: {why}"
      + (f" ({len(bad) - 1} more tensors too)." if len(bad) > 1 else ".")
    )
  return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
