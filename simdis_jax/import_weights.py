"""Import a published network as a finished BYOL run: simdis-import --format F --in FILE --out DIR.

(`python -m simdis_jax.import_weights` is the same command.)

Formats:
  torchvision  a torchvision ResNet state_dict (conv1, bn1, layer1..4, fc), e.g. a supervised teacher
  authors      a SimDis authors' checkpoint (module.student / student_ema ... with fc = projector, pred_*)
  deepmind     DeepMind's BYOL pickle (deepmind-research/byol, Haiku): online network + predictor, target = EMA;
               the network gets model.student.style="haiku" (SAME padding, Haiku's shortcuts)

The workdir written (config.json, run_info.json, one checkpoint at its last step) is a
method=byol run whose student is the imported network: --config.teacher.workdir of a
SimDis-Off run, the kNN and linear evaluations and simdis_jax.load_encoder all accept it.
Parts the file lacks (torchvision: the projector and predictor; a missing EMA) are
initialised as a fresh run would (EMA = a copy of the online network); run_info.json
lists them under "imported".
"""

import json
import logging
import os
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from simdis_jax import config_files
from simdis_jax.interop import convert

FORMATS = ("torchvision", "authors", "deepmind")
DEFAULT_HIDDEN, DEFAULT_PROJ = 4096, 256  # BYOL's projector when the file has none


def read(fmt: str, path: str, network: str = "student") -> convert.Imported:
  """The network in a checkpoint file of format `fmt`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--in {path} does not exist.")
  if fmt in ("torchvision", "authors"):
    from simdis_jax.interop import torch_pickle  # pylint: disable=import-outside-toplevel

    sd = torch_pickle.state_dict(torch_pickle.load(path))
    return convert.from_torchvision(sd) if fmt == "torchvision" else convert.from_authors(sd, network)
  if fmt == "deepmind":
    from simdis_jax.interop import deepmind  # pylint: disable=import-outside-toplevel

    return deepmind.from_deepmind(deepmind.load(path))
  raise ValueError(f"--format={fmt!r}: choose one of {list(FORMATS)}.")


def run_config(
  imported: convert.Imported,
  base: Optional[ml_collections.ConfigDict] = None,
  hidden_dim: int = DEFAULT_HIDDEN,
  proj_dim: int = DEFAULT_PROJ,
) -> ml_collections.ConfigDict:
  """The config of the imported run: `base` (data, evaluation settings) as a one-step BYOL run of the network."""
  from simdis_jax import configuration, runs  # pylint: disable=import-outside-toplevel
  from simdis_jax.methods import recipes  # pylint: disable=import-outside-toplevel

  c = ml_collections.ConfigDict((base or configuration.base_config()).to_dict())
  a = imported.arch
  recipes.student_alone(c)  # a one-step run of the student alone, whose network can be a teacher
  c.teacher.workdir = ""
  c.model.student = configuration.network_config(
    a["depth"],
    a["width"],
    a["cifar_stem"],
    a["hidden_dim"] or hidden_dim,
    a["proj_dim"] or proj_dim,
    style=a.get("style", "torchvision"),
    head_bias=a.get("head_bias", True),
  )
  c.model.bn_running_var = imported.bn_running_var
  c.train.steps = 1
  c.probe.enabled = False
  c = configuration.validate(c)
  channels = runs.image_channels(c.data.name)
  if channels != imported.in_channels:
    raise ValueError(
      f"The imported network takes {imported.in_channels}-channel images but config.data.name="
      f"{c.data.name!r} has {channels}; pass a --config whose dataset matches."
    )
  return c


def _merge(fresh, imported, what: str):
  """`fresh` (a tree of arrays) with every leaf `imported` has replaced; shapes must agree, names must exist."""
  flat_new = {"/".join(p.key for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(imported)}
  flat_old = {"/".join(p.key for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(fresh)}
  unknown = sorted(set(flat_new) - set(flat_old))
  if unknown:
    raise ValueError(f"{what}: the converted checkpoint has variables this network lacks: {unknown[:6]}")
  bad = [f"{k}: {flat_new[k].shape} vs {flat_old[k].shape}" for k in flat_new if flat_new[k].shape != flat_old[k].shape]
  if bad:
    raise ValueError(f"{what}: shapes differ from the network's: {bad[:6]}")

  def pick(path, leaf):
    key = "/".join(p.key for p in path)
    return jnp.asarray(flat_new[key], leaf.dtype) if key in flat_new else leaf

  missing = sorted(set(flat_old) - set(flat_new))
  return jax.tree_util.tree_map_with_path(pick, fresh), missing


def write_run(imported: convert.Imported, out: str, config: ml_collections.ConfigDict, source: dict) -> dict:
  """Writes the finished one-step BYOL workdir holding the imported network; returns run_info["imported"]."""
  from simdis_jax import checkpoint, runs, workdir as workdir_files  # pylint: disable=import-outside-toplevel

  out = workdir_files.absolute(out)
  if os.path.exists(os.path.join(out, "checkpoints")):
    raise FileExistsError(f"--out {out} already holds checkpoints; choose a fresh directory.")
  checkpoint.check_writable(out)
  with jax.default_device(jax.local_devices()[0]):
    state = jax.jit(runs.build(config, 1, 0).create)()
  s = state.student
  params, missing_p = _merge(s.params, imported.online["params"], "online params")
  stats, missing_s = _merge(s.batch_stats, imported.online["batch_stats"], "online BN statistics")
  if imported.ema is not None:
    ema_params, _ = _merge(s.ema_params, imported.ema["params"], "EMA params")
    ema_stats, _ = _merge(s.ema_batch_stats, imported.ema["batch_stats"], "EMA BN statistics")
  else:  # no EMA in the file: the online network's encoder + projector, as the authors start one
    ema_params = {k: params[k] for k in s.ema_params}
    ema_stats = {k: stats[k] for k in s.ema_batch_stats}
  state = state.replace(
    step=jnp.asarray(1, jnp.int32),
    student=s.replace(params=params, batch_stats=stats, ema_params=ema_params, ema_batch_stats=ema_stats),
  )
  fresh = sorted({m.split("/")[0] for m in missing_p + missing_s})
  info = {
    "format": source["format"],
    "file": source["file"],
    "network": source.get("network", "student"),
    "bn_running_var": imported.bn_running_var,
    "notes": list(imported.notes),
    "freshly_initialised": fresh,
    "ema": "from the file" if imported.ema is not None else "copy of online",
  }
  mgr = checkpoint.manager(out)
  checkpoint.save(mgr, 1, state)
  mgr.wait_until_finished()
  mgr.close()
  workdir_files.write_config(out, config)
  run_info = {
    "steps_per_epoch": 1,
    "total_steps": 1,
    "warmup_steps": 0,
    "num_train": 0,
    "devices": 1,
    "processes": 1,
    "imported": info,
  }
  workdir_files.write_json(out, workdir_files.RUN_INFO_FILE, run_info, indent=2)
  return info


def import_checkpoint(
  fmt: str,
  path: str,
  out: str,
  config: Optional[ml_collections.ConfigDict] = None,
  network: str = "student",
  hidden_dim: int = DEFAULT_HIDDEN,
  proj_dim: int = DEFAULT_PROJ,
) -> dict:
  """Reads `path` in format `fmt` and writes the finished BYOL workdir `out`; returns what was imported."""
  imported = read(fmt, path, network)
  c = run_config(imported, config, hidden_dim, proj_dim)
  return write_run(imported, out, c, {"format": fmt, "file": os.path.abspath(path), "network": network})


def define_flags(fv) -> None:
  """The import's flags, on the FlagValues `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_enum("format", None, list(FORMATS), "The checkpoint's format.", flag_values=fv, required=True)
  flags.DEFINE_string("in", None, "The checkpoint file (.pth / .pth.tar / .pkl).", flag_values=fv, required=True)
  flags.DEFINE_string("out", None, "The workdir to write (must not hold checkpoints).", flag_values=fv, required=True)
  flags.DEFINE_string(
    "config",
    "",
    "Config file[:arg] giving the dataset and evaluation settings of the run "
    "(default: the base config, ImageNet at 224 px).",
    flag_values=fv,
  )
  flags.DEFINE_enum(
    "network", "student", ["student", "teacher"], "Authors format: which network of their checkpoint.", flag_values=fv
  )
  flags.DEFINE_integer("hidden_dim", DEFAULT_HIDDEN, "Projector width if the file has none.", flag_values=fv)
  flags.DEFINE_integer("proj_dim", DEFAULT_PROJ, "Projection size if the file has none.", flag_values=fv)


def main(argv=None) -> int:
  """Command line (see the module docstring)."""
  from simdis_jax import cli  # pylint: disable=import-outside-toplevel

  args = cli.parse(define_flags, argv, __doc__)
  args.path = getattr(args, "in")
  logging.getLogger("absl").setLevel(logging.WARNING)
  config = config_files.load_config(args.config) if args.config else None
  try:
    info = import_checkpoint(args.format, args.path, args.out, config, args.network, args.hidden_dim, args.proj_dim)
  except (ValueError, FileNotFoundError, FileExistsError) as e:  # bad input: one line, no traceback
    print(f"import_weights: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"workdir": os.path.abspath(args.out), **info}, indent=2))
  return 0


def run() -> None:
  """Console script simdis-import."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
