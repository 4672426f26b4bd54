"""Adds a finished run to the zoo (maintainers): python -m simdis_jax.zoo.build NAME RUN_DIR --trained TEXT

Copies the run's config.json, run_info.json, summary.json and its last checkpoint into
simdis_jax/zoo/models/NAME/ and writes the entry (sha256 and size of every file, the run's
recorded kNN and linear top-1, encoder parameters) into manifest.json.
"""

import argparse
import json
import os
import shutil
import sys

from simdis_jax import zoo

RUN_FILES = ("config.json", "run_info.json", "summary.json")


def encoder_params(run_dir: str) -> int:
  """Parameters of the run's student encoder (what `embed` uses; no projector or predictors)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from simdis_jax import api, runs  # pylint: disable=import-outside-toplevel

  config = runs.read_run_config(run_dir)
  net = api.build_network(config, "student")
  shapes = jax.eval_shape(
    lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + runs.image_shape(config)), train=False)
  )["params"]
  shapes = {k: v for k, v in shapes.items() if k != "projector"}
  return int(sum(x.size for x in jax.tree.leaves(shapes)))


def linear_top1(run_dir: str) -> tuple:
  """(top-1, protocol description) of the run's recorded linear evaluation of its student."""
  for sub in ("linear_student", "linear_fast"):
    path = os.path.join(run_dir, sub, "linear_eval.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        r = json.load(f)
      return float(r["top1"]), f"{r['protocol']} protocol, {r['mode']} mode, {r['epochs']:g} epochs"
  raise FileNotFoundError(f"{run_dir} has no linear_student/ or linear_fast/ evaluation.")


def write_checksums(workdir: str, step: int) -> None:
  """Writes the per-array CRC32 file of `step` (checkpoint.CHECKSUM_DIR), as training's save does, from the
  checkpoint itself: the restore then verifies every array instead of warning that the step is unverified."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from simdis_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from simdis_jax import workdir as workdir_files  # pylint: disable=import-outside-toplevel

  mgr = checkpoint.manager(workdir)
  tree = mgr.restore(step, args=ocp.args.StandardRestore())
  leaves = checkpoint._host_leaves(tree)  # pylint: disable=protected-access
  bad = checkpoint.non_finite_leaves(leaves)
  if bad:
    raise ValueError(f"{workdir} step {step} holds NaN/Inf in {bad[:3]}: not a network to ship.")
  os.makedirs(os.path.join(workdir, checkpoint.CHECKSUM_DIR), exist_ok=True)
  workdir_files.atomic_write_text(
    os.path.join(workdir, checkpoint.CHECKSUM_DIR, f"{step}.json"), json.dumps(checkpoint._checksums(leaves))
  )  # pylint: disable=protected-access


def add(name: str, run_dir: str, trained: str, notes: str = "") -> dict:
  """Copies the run into the zoo under `name` and records it in the manifest; returns the entry."""
  with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  step = int(summary["steps"])
  src_ckpt = os.path.join(run_dir, "checkpoints", str(step))
  if not os.path.isdir(src_ckpt):
    raise FileNotFoundError(f"{run_dir} has no checkpoint at its last step {step}.")
  out = zoo.entry_dir(name)
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  for f in RUN_FILES:
    shutil.copy(os.path.join(run_dir, f), os.path.join(out, f))
  shutil.copytree(src_ckpt, os.path.join(out, "checkpoints", str(step)))
  write_checksums(out, step)
  files, sizes = {}, {}
  for folder, _, found in sorted(os.walk(out)):
    for f in sorted(found):
      path = os.path.join(folder, f)
      rel = os.path.relpath(path, out).replace(os.sep, "/")
      files[rel], sizes[rel] = zoo.sha256(path), os.path.getsize(path)
  top1, protocol = linear_top1(run_dir)
  net = config["model"]["student"]
  entry = {
    "method": config["method"],
    "dataset": config["data"]["name"],
    "network": f"{net['arch']}{net['depth'] if net['arch'] == 'resnet' else ''} w{net['width']}"
    + (" cifar stem" if net["cifar_stem"] else ""),
    "params": encoder_params(out),
    "knn_top1": float(summary["knn_top1/student"]),
    "knn": "weighted cosine kNN, k=20, T=0.07, all 60k training images as the bank, the 10k test images",
    "linear_top1": top1,
    "linear": protocol,
    "trained": trained,
    "step": step,
    "source": os.path.relpath(run_dir),
    "notes": notes,
    "files": files,
    "bytes": sizes,
  }
  data = {"models": {}}
  if os.path.exists(zoo.MANIFEST_FILE):
    with open(zoo.MANIFEST_FILE, encoding="utf-8") as f:
      data = json.load(f)
  data["models"][name] = entry
  with open(zoo.MANIFEST_FILE, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
  return entry


def main(argv=None) -> int:
  """Command line (see the module docstring)."""
  parser = argparse.ArgumentParser(description="Add a finished run to simdis_jax's zoo.")
  parser.add_argument("name")
  parser.add_argument("run_dir")
  parser.add_argument("--trained", required=True, help="how it was trained, e.g. 'BYOL, 20 epochs'")
  parser.add_argument("--notes", default="")
  args = parser.parse_args(argv)
  entry = add(args.name, args.run_dir, args.trained, args.notes)
  print(json.dumps({k: v for k, v in entry.items() if k not in ("files", "bytes")}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
