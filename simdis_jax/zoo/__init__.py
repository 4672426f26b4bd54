"""The model zoo: finished networks shipped inside the package, opened by name (e.g. "fmnist/byol-r10w16").

Each entry is a finished run's workdir (config.json, run_info.json, summary.json and its last
checkpoint) under simdis_jax/zoo/models/<name>/, so a plain `pip install .` has it. Its name works
wherever a finished run's workdir does: `simdis_jax.load_encoder(name)`, `--config.teacher.workdir=<name>`
(SimDis-Off, SEED), `python -m simdis_jax.export --workdir <name>`, kNN and linear evaluation. Before a
run is first opened, every file is checked against the sha256 in manifest.json. `python -m simdis_jax.zoo`
prints the table of entries. This module imports no JAX.
"""

import hashlib
import json
import os
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(HERE, "models")
MANIFEST_FILE = os.path.join(HERE, "manifest.json")
_VERIFIED = set()  # names checked in this process: a 6 MB entry takes ~20 ms to hash, once


def manifest() -> Dict[str, dict]:
  """{name: entry} of the shipped networks (files with sha256, measured top-1, architecture, source)."""
  with open(MANIFEST_FILE, encoding="utf-8") as f:
    return json.load(f)["models"]


def names() -> List[str]:
  """The zoo's names, sorted."""
  return sorted(manifest())


def sha256(path: str) -> str:
  """Hex sha256 of one file."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def entry_dir(name: str) -> str:
  """The installed workdir of a zoo entry (not checked)."""
  return os.path.join(MODELS_DIR, *name.split("/"))


def verify(name: str) -> str:
  """The entry's workdir after checking every file's sha256; a damaged or missing file is one clear error."""
  entry = manifest()[name]
  root = entry_dir(name)
  if name in _VERIFIED:
    return root
  for rel, want in entry["files"].items():
    path = os.path.join(root, *rel.split("/"))
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Zoo model {name!r}: {rel} is missing from {root}; reinstall simdis_jax.")
    if sha256(path) != want:
      raise ValueError(
        f"Zoo model {name!r}: {rel} fails its sha256 check (the installed copy is damaged); reinstall simdis_jax."
      )
  _VERIFIED.add(name)
  return root


def resolve(workdir: str) -> str:
  """A zoo name becomes its verified installed workdir; anything else (an existing path first) is returned as is."""
  if not isinstance(workdir, str) or not workdir or os.path.exists(workdir) or "://" in workdir:
    return workdir
  if workdir in manifest():
    return verify(workdir)
  return workdir


def find(workdir: str) -> Optional[str]:
  """The zoo name a workdir path is the installed copy of, or None."""
  path = os.path.abspath(workdir)
  for name in manifest():
    if os.path.abspath(entry_dir(name)) == path:
      return name
  return None


def table() -> str:
  """The zoo as a plain-text table: name, method, network, parameters, kNN / linear top-1, size, source."""
  header = ("name", "method", "network", "params", "kNN top-1", "linear top-1", "size", "trained")
  rows = [header]
  for name, e in sorted(manifest().items()):
    size = sum(e["bytes"].values()) / 2**20
    rows.append(
      (
        name,
        e["method"],
        e["network"],
        f"{e['params'] / 1e6:.2f} M",
        f"{e['knn_top1']:.2f}",
        f"{e['linear_top1']:.2f}",
        f"{size:.1f} MiB",
        e["trained"],
      )
    )
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  notes = sorted({e["notes"] for e in manifest().values() if e.get("notes")})
  return "\n".join(lines + [""] + notes)
