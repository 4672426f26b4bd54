"""The authors' PyTorch step beside ours: built from a user's own clone of their repository, timed alternately.

    git clone https://github.com/JindongGu/SimDis ~/SimDis
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:byol_r18,32 --peer ~/SimDis --rounds 4

Nothing of the authors' code is part of this project: `--peer` puts the clone on sys.path and
builds their step from their classes as their training script does (SimDis_Model with the
config's networks and views, LARS_SGD with their parameter groups, lr/momentum/weight decay of
their experiment file), with their single-process BatchNorm ("vanilla": the same maths as
SyncBN on one process). Their step is forward (loss), zero_grad, backward, optimizer step, on
two random float32 views (their augmentation runs in DataLoader workers, outside the step);
ours is the jitted train step as training runs it, augmentation on the device included. Each
round times one block of each, in alternating order (peer, ours / ours, peer), and also resets
and reads the process's peak resident memory (Linux VmHWM) around each block.
"""

import importlib
import os
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import ml_collections

from simdis_jax import configuration, parallel
from simdis_jax.tools.benchmark.timing import build_step, synthetic_batch

PEER_METHODS = ("byol", "simdis_on")


def _peer_names(config) -> Tuple[str, Optional[str]]:
  """The authors' --model_s / --model_t strings for the config's networks and views."""
  if config.method not in PEER_METHODS:
    raise ValueError(f"--peer times method byol or simdis_on (the authors' online step); this config's method is "
                     f"{config.method!r}: pick e.g. configs/benchmark/r50_r18.py:byol_r18,32.")
  for name in ("student",) + (("teacher",) if config.method == "simdis_on" else ()):
    net = config.model[name]
    if net.get("arch", "resnet") != "resnet" or net.depth not in (18, 34, 50, 101, 152) or net.width != 64 \
        or net.cifar_stem or net.hidden_dim != 4096 or net.proj_dim != 256:
      raise ValueError(f"--peer needs the authors' networks: a width-64 ResNet-18/34/50/101/152 with the ImageNet "
                       f"stem and a 4096 -> 256 head; config.model.{name} is {dict(net)}.")
  views = ".".join(config.views)
  student = f"resnet{config.model.student.depth}.{views}"
  teacher = f"resnet{config.model.teacher.depth}.ttemadv" if config.method == "simdis_on" else None
  return student, teacher


def peer_step(clone: str, config: ml_collections.ConfigDict, seed: int = 0) -> Callable[[], float]:
  """One call = one training step of the authors' model for `config`'s shape; returns the loss."""
  root = os.path.abspath(os.path.expanduser(clone))
  if not os.path.isfile(os.path.join(root, "SimDis", "models", "sim_dis_train_model.py")):
    raise ValueError(f"--peer={clone!r} is not a clone of the authors' repository (no "
                     "SimDis/models/sim_dis_train_model.py under it): git clone https://github.com/JindongGu/SimDis.")
  import torch  # pylint: disable=g-import-not-at-top
  if root not in sys.path:
    sys.path.insert(0, root)
  model_lib = importlib.import_module("SimDis.models.sim_dis_train_model")
  optim_lib = importlib.import_module("SimDis.layers.optimizer")
  torch.manual_seed(seed)
  model_s, model_t = _peer_names(config)
  args = types.SimpleNamespace(syncBN=False, rank=0, model_s=model_s, model_t=model_t, offline=False)
  model = model_lib.SimDis_Model(args, config.ema.base, 1000)
  model.train()
  # Their get_optimizer: LARS on conv and linear weights, excluded (plain SGD) for BN parameters and biases.
  lars, exclude = [], []
  for m in model.modules():
    if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)):
      exclude += [m.weight, m.bias]
    elif isinstance(m, torch.nn.Linear):
      lars.append(m.weight)
      exclude.append(m.bias)
    elif isinstance(m, torch.nn.Conv2d):
      lars.extend(m.parameters())
  lr = config.optim.base_lr * config.train.batch_size / 256
  optimizer = optim_lib.LARS_SGD([{"params": lars, "lars_exclude": False}, {"params": exclude, "lars_exclude": True}],
                                 lr=lr, weight_decay=1e-4, momentum=0.9)
  n, s = config.train.batch_size, config.data.image_size
  views = [torch.randn(n, 3, s, s), torch.randn(n, 3, s, s)]

  def step() -> float:
    loss = model(views)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())

  return step


def _peak_rss_reset() -> bool:
  """Resets the process's peak resident set (Linux); False where that is not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _rss_kib(field: str) -> Optional[int]:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _timed_block(fn: Callable[[], Any], steps: int) -> Tuple[float, Optional[float]]:
  """(median seconds of `steps` calls, peak resident growth in bytes over the block or None)."""
  base = _rss_kib("VmRSS") if _peak_rss_reset() else None
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  peak = _rss_kib("VmHWM")
  return statistics.median(times), (None if base is None or peak is None else (peak - base) * 1024.0)


def race(config: ml_collections.ConfigDict, clone: str, rounds: int = 4, steps_per_round: int = 2,
         warmup: int = 2) -> Dict:
  """The authors' step and ours for `config`, alternated in one process; per-round times and speed ratios."""
  config = configuration.validate(config)
  mesh = parallel.make_mesh(jax.devices()[:1])
  _, state, train_step = build_step(config, mesh)
  images, labels = synthetic_batch(config, mesh)
  t0 = time.perf_counter()
  compiled = train_step.lower(state, images, labels).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  box = {"state": state}

  def ours() -> None:
    box["state"], metrics = compiled(box["state"], images, labels)
    jax.block_until_ready(metrics["loss"])

  theirs = peer_step(clone, config)
  for _ in range(warmup):
    ours()
    theirs()
  runs = {"peer": [], "ours": []}
  for r in range(rounds):
    order = (("peer", theirs), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("peer", theirs))
    for name, fn in order:
      runs[name].append(_timed_block(fn, steps_per_round))
  peer_s = [t for t, _ in runs["peer"]]
  ours_s = [t for t, _ in runs["ours"]]
  speed = [p / o for p, o in zip(peer_s, ours_s)]
  rss = {k: [m for _, m in v if m is not None] for k, v in runs.items()}
  import torch  # pylint: disable=g-import-not-at-top
  return {"config_method": config.method, "views": list(config.views), "global_batch": config.train.batch_size,
          "image_size": config.data.image_size, "peer_model_s_t": list(_peer_names(config)),
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "jax": jax.__version__,
          "device_kind": mesh.devices.flat[0].device_kind, "rounds": rounds, "steps_per_round": steps_per_round,
          "compile_s": compile_s, "peer_step_s": peer_s, "ours_step_s": ours_s, "speed_ours_over_peer": speed,
          "peer_step_s_median": statistics.median(peer_s), "ours_step_s_median": statistics.median(ours_s),
          "speed_median": statistics.median(speed),
          "ours_xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
          "peer_peak_rss_growth_bytes": max(rss["peer"]) if rss["peer"] else None,
          "ours_peak_rss_growth_bytes": max(rss["ours"]) if rss["ours"] else None}


def format_race(r: Dict) -> str:
  """The race as text: one line per round, then the medians."""
  lines = [f"authors' step ({' / '.join(filter(None, r['peer_model_s_t']))}, torch {r['torch']}, "
           f"{r['torch_threads']} threads) vs ours (jax {r['jax']}, {r['device_kind']}): {r['config_method']}, "
           f"batch {r['global_batch']}, {r['image_size']} px; {r['rounds']} rounds x {r['steps_per_round']} step(s), "
           "alternated", f"{'round':>5} {'authors s/step':>15} {'ours s/step':>12} {'our speed / theirs':>19}"]
  for i, (p, o, s) in enumerate(zip(r["peer_step_s"], r["ours_step_s"], r["speed_ours_over_peer"])):
    lines.append(f"{i + 1:>5} {p:>15.3f} {o:>12.3f} {s:>19.2f}")
  lines.append(f"{'median':>5} {r['peer_step_s_median']:>15.3f} {r['ours_step_s_median']:>12.3f} "
               f"{r['speed_median']:>19.2f}")
  mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f} MiB"
  lines.append(f"peak resident growth over a block: authors {mib(r['peer_peak_rss_growth_bytes'])}, ours "
               f"{mib(r['ours_peak_rss_growth_bytes'])} (XLA temp buffers {mib(r['ours_xla_temp_bytes'])})")
  return "\n".join(lines)
