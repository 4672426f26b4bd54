"""The authors' PyTorch step beside ours: built from a user's own clone of their repository, timed alternately.

    git clone https://github.com/JindongGu/SimDis ~/SimDis
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:byol_r18,32 --peer ~/SimDis --rounds 4

Nothing of the authors' code is part of this project: `--peer` puts the clone on sys.path and
builds their step from their classes as their training script does (SimDis_Model with the
config's networks and views, LARS_SGD with their parameter groups, lr/momentum/weight decay of
their experiment file; other network shapes than their ImageNet ResNets, such as the Fashion-MNIST
study's, are their ResNet class rebuilt in that shape: _adapted_resnet), with their single-process
BatchNorm ("vanilla": the same maths as SyncBN on one process). Their step is forward (loss), zero_grad,
backward, optimizer step, on two random float32 views (their augmentation runs in DataLoader workers, outside the step);
ours is the jitted train step as training runs it, augmentation on the device included. Each
round times one block of each, in alternating order (peer, ours / ours, peer), and also resets
and reads the process's peak resident memory (Linux VmHWM) around each block.
"""

import ctypes
import importlib
import os
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import ml_collections

from simdis_jax import configuration, parallel, runs
from simdis_jax.data import datasets
from simdis_jax.models import archs
from simdis_jax.tools.benchmark.timing import build_step, synthetic_batch

PEER_METHODS = ("byol", "simdis_on")


def _networks(config):
  return ("student",) + (("teacher",) if config.method == "simdis_on" else ())


def _standard(config) -> bool:
  """Whether the authors' classes build the config's networks as they are (their ImageNet ResNets)."""
  return not datasets.in_memory(config.data.name) and all(
    config.model[n].depth != 10
    and config.model[n].width == 64
    and not config.model[n].cifar_stem
    and (config.model[n].hidden_dim, config.model[n].proj_dim) == (4096, 256)
    for n in _networks(config)
  )


def _peer_names(config) -> Tuple[str, Optional[str]]:
  """The authors' --model_s / --model_t strings for the config's networks and views."""
  if config.method not in PEER_METHODS:
    raise ValueError(
      f"--peer times method byol or simdis_on (the authors' online step); this config's method is "
      f"{config.method!r}: pick e.g. configs/benchmark/r50_r18.py:byol_r18,32."
    )
  for name in _networks(config):
    net = config.model[name]
    if (
      archs.arch_of(net) != "resnet"
      or net.depth not in (10, 18, 34, 50, 101, 152)
      or net.get("style", "torchvision") != "torchvision"
    ):
      raise ValueError(
        f"--peer needs ResNets the authors' classes can build (depth 10-152, torchvision style); "
        f"config.model.{name} is {dict(net)}."
      )
  views = ".".join(config.views)
  student = f"resnet{config.model.student.depth}.{views}"
  teacher = f"resnet{config.model.teacher.depth}.ttemadv" if config.method == "simdis_on" else None
  return student, teacher


def _adapted_resnet(torch, resnet_lib, net, in_channels: int) -> Callable[..., Any]:
  """A builder of the authors' ResNet class in another shape than theirs (the Fashion-MNIST study's).

  Their class fixes 3 input channels, the 7x7/2 stem and max-pool, widths 64-512 and (in SimDis_Model)
  the 4096 -> 256 heads. Built with their class, then with their own _make_layer at the config's
  width, a 3x3/1 stem without max-pool for cifar_stem, and the config's head sizes.
  """
  block = resnet_lib.Bottleneck if net.depth >= 50 else resnet_lib.BasicBlock
  layers = {
    10: [1, 1, 1, 1],
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
  }[net.depth]

  def build(predictors=None, bn="vanilla", **_):
    model = resnet_lib.ResNet(
      block,
      layers,
      low_dim=net.proj_dim,
      hidden_dim=net.hidden_dim,
      MLP="byol",
      CLS=False,
      bn=bn,
      predictors=predictors,
    )
    w = net.width
    if net.cifar_stem:
      model.conv1 = torch.nn.Conv2d(in_channels, w, kernel_size=3, stride=1, padding=1, bias=False)
      model.maxpool = torch.nn.Identity()
    else:
      model.conv1 = torch.nn.Conv2d(in_channels, w, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = model._norm_layer(w)  # pylint: disable=protected-access
    model.inplanes = w
    for i, n in enumerate(layers):
      setattr(model, f"layer{i + 1}", model._make_layer(block, w * 2**i, n, stride=1 if i == 0 else 2))
    model.fc[0] = torch.nn.Linear(w * 8 * block.expansion, net.hidden_dim)
    for m in model.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model

  return build


def peer_step(clone: str, config: ml_collections.ConfigDict, seed: int = 0) -> Callable[[], float]:
  """One call = one training step of the authors' model for `config`'s shape; returns the loss."""
  root = os.path.abspath(os.path.expanduser(clone))
  if not os.path.isfile(os.path.join(root, "SimDis", "models", "sim_dis_train_model.py")):
    raise ValueError(
      f"--peer={clone!r} is not a clone of the authors' repository (no "
      "SimDis/models/sim_dis_train_model.py under it): git clone https://github.com/JindongGu/SimDis."
    )
  import torch  # pylint: disable=g-import-not-at-top

  if root not in sys.path:
    sys.path.insert(0, root)
  model_lib = importlib.import_module("SimDis.models.sim_dis_train_model")
  optim_lib = importlib.import_module("SimDis.layers.optimizer")
  torch.manual_seed(seed)
  model_s, model_t = _peer_names(config)
  args = types.SimpleNamespace(syncBN=False, rank=0, model_s=model_s, model_t=model_t, offline=False)
  in_channels = runs.image_channels(config.data.name)
  if _standard(config):
    model = model_lib.SimDis_Model(args, config.ema.base, 1000)
  else:  # their SimDis_Model around their ResNet class in the config's shape (see _adapted_resnet)
    shapes = {model_s: config.model.student, model_t: config.model.teacher}
    original = model_lib.resnet.load_resnet
    model_lib.resnet.load_resnet = lambda name: _adapted_resnet(torch, model_lib.resnet, shapes[name], in_channels)
    try:
      model = model_lib.SimDis_Model(args, config.ema.base, 1000)
    finally:
      model_lib.resnet.load_resnet = original
  # On a GPU backend their step runs on the GPU as their run_SimDis.py sets it up (CUDA, cudnn.benchmark, float32).
  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
  model.to(device).train()
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
  optimizer = optim_lib.LARS_SGD(
    [{"params": lars, "lars_exclude": False}, {"params": exclude, "lars_exclude": True}],
    lr=lr,
    weight_decay=1e-4,
    momentum=0.9,
  )
  n, s = config.train.batch_size, config.data.image_size
  views = [torch.randn(n, in_channels, s, s, device=device), torch.randn(n, in_channels, s, s, device=device)]

  def step() -> float:
    loss = model(views)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())  # waits for the device

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


def _fixed_mmap_threshold() -> None:
  """Large blocks straight from mmap, given back on free (glibc): otherwise the heap keeps the previous step's
  buffers resident and the peak-resident reading of a block misses them."""
  try:
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed (no dynamic raise)
  except (OSError, AttributeError):
    pass


def _timed_block(fn: Callable[[], Any], steps: int) -> Tuple[float, float, Optional[float]]:
  """(median wall seconds of `steps` calls, their median process CPU seconds, peak resident growth in bytes over
  the block or None)."""
  base = _rss_kib("VmRSS") if _peak_rss_reset() else None
  times, cpu = [], []
  for _ in range(steps):
    t, c = time.perf_counter(), time.process_time()
    fn()
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  peak = _rss_kib("VmHWM")
  return (
    statistics.median(times),
    statistics.median(cpu),
    None if base is None or peak is None else (peak - base) * 1024.0,
  )


def race(
  config: ml_collections.ConfigDict, clone: str, rounds: int = 4, steps_per_round: int = 2, warmup: int = 2
) -> Dict:
  """The authors' step and ours for `config`, alternated in one process; per-round times and speed ratios."""
  config = configuration.validate(config)
  _fixed_mmap_threshold()
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
  peer_s, ours_s = ([t for t, _, _ in runs[k]] for k in ("peer", "ours"))
  peer_cpu, ours_cpu = ([c for _, c, _ in runs[k]] for k in ("peer", "ours"))
  speed = [p / o for p, o in zip(peer_s, ours_s)]
  rss = {k: [m for _, _, m in v if m is not None] for k, v in runs.items()}
  import torch  # pylint: disable=g-import-not-at-top

  return {
    "config_method": config.method,
    "views": list(config.views),
    "global_batch": config.train.batch_size,
    "image_size": config.data.image_size,
    "peer_model_s_t": list(_peer_names(config)),
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "jax": jax.__version__,
    "device_kind": mesh.devices.flat[0].device_kind,
    "rounds": rounds,
    "steps_per_round": steps_per_round,
    "compile_s": compile_s,
    "peer_step_s": peer_s,
    "ours_step_s": ours_s,
    "speed_ours_over_peer": speed,
    "peer_step_s_median": statistics.median(peer_s),
    "ours_step_s_median": statistics.median(ours_s),
    "speed_median": statistics.median(speed),
    "peer_cpu_s": peer_cpu,
    "ours_cpu_s": ours_cpu,
    "cpu_ratio_peer_over_ours_median": statistics.median(p / o for p, o in zip(peer_cpu, ours_cpu)),
    "ours_xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
    "peer_peak_rss_growth_bytes": max(rss["peer"]) if rss["peer"] else None,
    "ours_peak_rss_growth_bytes": max(rss["ours"]) if rss["ours"] else None,
  }


def format_race(r: Dict) -> str:
  """The race as text: one line per round, then the medians."""
  lines = [
    f"authors' step ({' / '.join(filter(None, r['peer_model_s_t']))}, torch {r['torch']}, "
    f"{r['torch_threads']} threads) vs ours (jax {r['jax']}, {r['device_kind']}): {r['config_method']}, "
    f"batch {r['global_batch']}, {r['image_size']} px; {r['rounds']} rounds x {r['steps_per_round']} step(s), "
    "alternated",
    f"{'round':>5} {'authors s/step':>15} {'ours s/step':>12} {'our speed / theirs':>19} "
    f"{'CPU s: authors':>15} {'ours':>6}",
  ]
  for i, row in enumerate(
    zip(r["peer_step_s"], r["ours_step_s"], r["speed_ours_over_peer"], r["peer_cpu_s"], r["ours_cpu_s"])
  ):
    lines.append(f"{i + 1:>5} {row[0]:>15.3f} {row[1]:>12.3f} {row[2]:>19.2f} {row[3]:>15.2f} {row[4]:>6.2f}")
  lines.append(
    f"{'median':>5} {r['peer_step_s_median']:>15.3f} {r['ours_step_s_median']:>12.3f} {r['speed_median']:>19.2f}"
  )
  lines.append(
    "CPU s: the process's CPU time per step (all threads; spinning threads count too): on a machine "
    "shared with other jobs, compare it with the wall time."
  )
  mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f} MiB"
  lines.append(
    f"peak resident growth over a block: authors {mib(r['peer_peak_rss_growth_bytes'])}, ours "
    f"{mib(r['ours_peak_rss_growth_bytes'])} (XLA temp buffers {mib(r['ours_xla_temp_bytes'])})"
  )
  return "\n".join(lines)
