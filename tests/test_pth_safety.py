"""The .pth reader is memory-safe: shapes are checked against storages, damage is one line, fuzzing never crashes."""

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from simdis_jax import import_weights
from simdis_jax.interop import convert, torch_pickle

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = 300  # mutated files: each a few ms to read


def _small_pth(path) -> None:
  """A real torch.save of a small state_dict whose values are distinctive (no accidental matches with 0 or 1)."""
  g = torch.Generator().manual_seed(0)
  sd = {
    "conv1.weight": torch.randn(4, 1, 3, 3, generator=g) + 7.25,
    "bn1.running_var": torch.rand(4, generator=g) + 3.5,
    "fc.weight": torch.randn(3, 4, generator=g) - 9.5,
    "fc.bias": torch.arange(3, dtype=torch.float64) + 0.125,
  }
  torch.save(sd, str(path))


def _with_record(out, storage_numel: int, size, stride) -> None:
  """A torch-format zip whose only tensor, conv1.weight, declares `size`/`stride` over a `storage_numel` storage."""

  class Storage:  # pickled by persistent id, as torch does
    pass

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", torch.FloatStorage, "0", "cpu", storage_numel) if isinstance(obj, Storage) else None

  class Rebuild:
    def __reduce__(self):
      return (torch._utils._rebuild_tensor_v2, (Storage(), 0, size, stride, False, None))

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump({"conv1.weight": Rebuild()})
  with zipfile.ZipFile(out, "w") as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/data/0", np.arange(storage_numel, dtype=np.float32).tobytes())


def test_a_tensor_larger_than_its_storage_is_named_and_never_read(tmp_path):
  """A 16-byte storage declared 64×3×7×7 (which read 8,424 heap values before) is refused, naming the tensor."""
  bad = tmp_path / "big.pth"
  _with_record(bad, 4, (64, 3, 7, 7), (147, 49, 7, 1))
  with pytest.raises(
    ValueError,
    match=r"tensor 'conv1.weight' is damaged: shape \(64, 3, 7, 7\) with stride "
    r"\(147, 49, 7, 1\) at offset 0 needs 9408 elements, but its storage holds 4",
  ):
    torch_pickle.state_dict(torch_pickle.load(str(bad)))
  _with_record(bad, 4, (2, 2), (1 << 60, 1))  # huge strides: segfaulted import_weights
  with pytest.raises(ValueError, match=r"'conv1.weight' is damaged: shape \(2, 2\) with stride"):
    import_weights.read("torchvision", str(bad))
  _with_record(bad, 4, (2, 2), (-1, 1))
  with pytest.raises(ValueError, match=r"'conv1.weight' is damaged: size \(2, 2\) / stride \(-1, 1\)"):
    torch_pickle.state_dict(torch_pickle.load(str(bad)))


def test_damaged_and_truncated_files_and_wrong_ranks_are_one_line(tmp_path):
  _small_pth(tmp_path / "ok.pth")
  data = (tmp_path / "ok.pth").read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match=r"cut.pth is a damaged or truncated zip file"):
    torch_pickle.load(str(tmp_path / "cut.pth"))
  storage = data.index(np.float32(torch.load(str(tmp_path / "ok.pth"))["conv1.weight"][0, 0, 0, 0]).tobytes())
  flipped = bytearray(data)
  flipped[storage] ^= 0x10
  (tmp_path / "flip.pth").write_bytes(bytes(flipped))
  with pytest.raises(ValueError, match=r"flip.pth is damaged \(BadZipFile: Bad CRC-32 .*\): copy or download it"):
    torch_pickle.load(str(tmp_path / "flip.pth"))
  torch.save({"conv1.weight": torch.zeros(8)}, str(tmp_path / "flat.pth"))  # IndexError in convert before
  with pytest.raises(
    ValueError,
    match=r"tensor 'conv1.weight' has shape \(8,\) \(float32\); the stem convolution "
    r"\[out, in, kh, kw\] needs a 4-D number array",
  ):
    import_weights.read("torchvision", str(tmp_path / "flat.pth"))
  with pytest.raises(ValueError, match="lacks 'bn1.weight'"):
    convert.from_torchvision({"conv1.weight": np.zeros((4, 1, 3, 3), np.float32)})


FUZZ = r"""
import json, random, sys, zipfile
import numpy as np
from simdis_jax.interop import torch_pickle
src, n, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(src, "rb").read()
words = {data[i:i + 4] for i in range(len(data) - 3)}  # every 4-byte window of the file
wide = {data[i:i + 8] for i in range(len(data) - 7)}
rng = random.Random(0)
out = {"cases": 0, "loaded": 0, "refused": 0, "foreign": 0, "other": []}
for case in range(n):
  mutated = bytearray(data)
  kind = case % 3
  if kind == 0:  # byte flips anywhere
    for _ in range(rng.randint(1, 4)):
      mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
  elif kind == 1:  # truncation
    mutated = mutated[:rng.randrange(len(mutated))]
  else:  # flips inside the pickle, then zip CRCs made to match: the unpickler sees hostile records
    with zipfile.ZipFile(src) as z:
      names = z.namelist()
      parts = {name: bytearray(z.read(name)) for name in names}
    pkl = [k for k in parts if k.endswith("data.pkl")][0]
    for _ in range(rng.randint(1, 3)):
      parts[pkl][rng.randrange(len(parts[pkl]))] = rng.randrange(256)
    path = f"{tmp}/re.pth"
    with zipfile.ZipFile(path, "w") as z:
      for name in names:
        z.writestr(name, bytes(parts[name]))
    mutated = bytearray(open(path, "rb").read())
    words_here = {bytes(mutated[i:i + 4]) for i in range(len(mutated) - 3)}
    wide_here = {bytes(mutated[i:i + 8]) for i in range(len(mutated) - 7)}
  path = f"{tmp}/m.pth"
  open(path, "wb").write(bytes(mutated))
  out["cases"] += 1
  try:
    sd = torch_pickle.state_dict(torch_pickle.load(path))
  except ValueError:
    out["refused"] += 1
    continue
  except Exception as e:  # anything else is a defect: reported by the test
    out["other"].append(f"case {case}: {type(e).__name__}: {e}"[:200])
    continue
  out["loaded"] += 1
  allowed, allowed8 = (words | words_here, wide | wide_here) if kind == 2 else (words, wide)
  for name, value in sd.items():  # sentinel check: each element's bytes must occur in the file
    raw = np.ascontiguousarray(value).view(np.uint8).reshape(-1, value.itemsize) if value.size else []
    for element in raw:
      b = element.tobytes()
      if len(b) in (1, 2) or (len(b) == 4 and b in allowed) or (len(b) == 8 and b in allowed8):
        continue
      out["foreign"] += 1
      break
print(json.dumps(out))
"""


def test_fuzzed_pth_files_never_crash_and_never_read_outside_the_file(tmp_path):
  """Hundreds of byte-flipped / truncated copies of a real torch .pth, read in a subprocess (a segfault shows as
  its exit status): each is read or refused with a ValueError, and every value read lies in the file's bytes."""
  _small_pth(tmp_path / "ok.pth")
  proc = subprocess.run(
    [sys.executable, "-c", FUZZ, str(tmp_path / "ok.pth"), str(CASES), str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )
  assert proc.returncode == 0, f"the reader crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  print(
    f"fuzz: {result['cases']} mutated .pth files: {result['loaded']} read, {result['refused']} refused in one "
    f"ValueError, {len(result['other'])} other errors, {result['foreign']} tensors with out-of-file values"
  )
  assert result["cases"] == CASES and result["other"] == [] and result["foreign"] == 0
  assert result["loaded"] > 0 and result["refused"] > 0  # both paths exercised
