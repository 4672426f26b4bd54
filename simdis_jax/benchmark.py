"""Throughput of the train step against the devices' own limit, and the paper's Table 1 from measured FLOPs.

    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,64 --steps 10
    python -m simdis_jax.benchmark --config configs/demo.py --steps 10 --breakdown
    python -m simdis_jax.benchmark --table1            # per-image training cost, 224 px
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,32 \\
        --compare=model.conv_impl=xla --compare=model.conv_impl=matmul --rounds 4   # interleaved A/B

The step is built exactly as train.py builds it (same networks, optimizer,
state, mesh and jitted, state-donating step) but fed synthetic uint8 images of
the config's size, so no dataset is needed. SimDis-Off's frozen teacher has
random weights here: its cost does not depend on its values.

FLOPs come from XLA's cost analysis of the compiled programs (XLA counts a
multiply-add as 2 FLOPs; the paper's "4.1 G FLOPs" of a ResNet-50 are
multiply-adds, so forward figures are also given as MACs = FLOPs / 2). The
peak is measured in the same run: a jitted matmul at the step's compute dtype
on every device of the mesh.
"""

import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from simdis_jax import configuration, optim, parallel
from simdis_jax.data import augment
from simdis_jax.state import build_networks, create_train_state
from simdis_jax.step import make_train_step

BENCHMARK_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs", "benchmark", "r50_r18.py")

# The paper's Table 1: forward multiply-adds per 224-px image, and its cost formulas (× M × N).
PAPER_TEACHER_GMACS = 4.1
PAPER_STUDENT_GMACS = 1.8
PAPER_MULTIVIEW_GMACS = 0.012
PAPER_TABLE1 = {  # method: (target views, G forward MACs per image per epoch, formula)
    "SimDis-Off": (2, 2 * PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(8.2G + 1.8G) x M x N"),
    "SimDis-On": (2, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(4.1G + 1.8G) x M x N"),
    "SimDis-On-7v": (7, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS + PAPER_MULTIVIEW_GMACS,
                     "(4.1G + 1.8G + 12M) x M x N"),
}


# Every field of the benchmark's JSON line.
FIELDS = ("config", "backend", "devices", "device_kind", "processes", "compute_dtype", "global_batch", "compile_s",
          "steps_timed", "step_s_median", "step_s_min", "step_s_max", "step_s_iqr", "images_per_s",
          "images_per_s_per_device", "flops_per_step", "flops_per_step_compiled", "conv_impl", "flops_per_image", "student_forward_gmacs_per_image",
          "student_forward_xla_gflops_per_image", "student_predictor_gmacs_per_image",
          "teacher_forward_gmacs_per_image", "teacher_forward_xla_gflops_per_image", "achieved_flops_per_s",
          "matmul_peak_flops_per_s", "matmul_peak_n", "fraction_of_peak", "fraction_of_peak_paired", "matmul_peak_contemporaneous_flops_per_s",
          "fraction_of_peak_contemporaneous", "peak_memory_bytes", "final_loss",
          "synthetic_data", "random_offline_teacher")


# --- Measuring ---

def flops_of(compiled) -> float:
  """FLOPs of one call of a lowered or compiled program, from XLA's cost analysis (per device for SPMD programs)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis:  # None: no cost analysis for this program on this backend (unoptimised HLO on GPU)
    return float("nan")
  return float(analysis.get("flops", float("nan")))


def raw_image_shape(config):
  """Shape of one synthetic example as the input pipeline hands it to the step.

  In-memory Fashion-MNIST: the whole image (the device crops). Streamed datasets: the two
  host crops [2, S, S, 3] (the device does everything but the crop), as in training.
  """
  if config.data.name == "fashion_mnist":
    return (28, 28, 1)
  return (2, config.data.image_size, config.data.image_size, 3)


def synthetic_batch(config, mesh, seed: int = 0):
  """A global (uint8 images, int32 labels) batch of the config's size, sharded over the mesh."""
  rng = np.random.default_rng(seed)
  n = config.train.batch_size
  images = rng.integers(0, 256, (n,) + raw_image_shape(config), dtype=np.uint8)
  labels = rng.integers(0, max(config.probe.num_classes, 2), (n,), dtype=np.int32)
  sharding = parallel.batch_sharded(mesh)
  return jax.device_put(images, sharding), jax.device_put(labels, sharding)


def network_image_shape(config):
  """Shape of one augmented view (what the networks see)."""
  return (config.data.image_size, config.data.image_size, raw_image_shape(config)[-1])


def build_step(config, mesh, total_steps: int = 1000):
  """(networks, fresh replicated state, jitted train step) built as train.py builds them."""
  networks = build_networks(config)
  schedule = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, total_steps,
                                          total_steps // 10, config.optim.warmup_init_lr)
  tx = optim.make_optimizer(config.optim, schedule)
  create = functools.partial(create_train_state, config, networks, tx, network_image_shape(config))
  state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
  return networks, state, make_train_step(config, networks, tx, schedule, total_steps, mesh)


def reference_step_flops(config, mesh, state, images, labels) -> float:
  """XLA's FLOPs of one step of the whole mesh, written with lax convolutions: what every figure is measured against.

  Counted on the step's HLO before optimisation (the shard_map body, i.e. one
  device's work, times the devices), for two reasons. A compiled GPU program hands
  its convolutions and matmuls to cuDNN/cuBLAS custom calls that XLA's cost
  analysis does not count (it gave 1.77 G per image for SimDis-On-7v's ~91 G at
  224 px on an H200); on CPU the two counts agree within 0.5%. And
  conv_impl="matmul" also multiplies the zero padding taps (a quarter of a
  ResNet-18's work at 64 px, whose last stage has 2x2 maps); counting those would
  flatter the achieved FLOP/s, so the lax form is counted whatever the config runs.
  """
  flops = flops_of(make_step_for(config, "xla", mesh).lower(state, images, labels))
  if not np.isfinite(flops):  # the GPU backend gives no cost analysis of an unoptimised program
    flops = cpu_step_flops(config, mesh.devices.size, state, images, labels)
  return flops * mesh.devices.size


def cpu_step_flops(config, num_devices: int, state, images, labels) -> float:
  """One device's FLOPs of the lax-convolution step, counted by lowering it for the host CPU.

  Nothing runs: the step is lowered on abstract arguments of one device's share of
  the batch at the config's compute dtype (FLOPs do not depend on the backend).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.compute_dtype = jnp.dtype(configuration.compute_dtype(config)).name
  cpu_mesh = parallel.make_mesh(jax.devices("cpu")[:1])
  per_device = lambda x, batch: jax.ShapeDtypeStruct((batch,) + x.shape[1:], x.dtype)
  local = images.shape[0] // num_devices
  config.train.batch_size = local
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  return flops_of(make_step_for(config, "xla", cpu_mesh).lower(state, per_device(images, local),
                                                                   per_device(labels, local)))


def conv_impls(config) -> set:
  """The convolution implementations the config's networks use."""
  nets = [config.model.student] + ([config.model.teacher] if configuration.uses_teacher(config) else [])
  return {configuration.conv_impl(config, n) for n in nets}


def make_step_for(config, conv_impl: str, mesh):
  """The jitted train step of `config` with its convolutions computed as `conv_impl` (same state)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.conv_impl = conv_impl
  networks = build_networks(config)
  schedule = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, 1000, 100,
                                          config.optim.warmup_init_lr)
  return make_train_step(config, networks, optim.make_optimizer(config.optim, schedule), schedule, 1000, mesh)


def time_calls(fn: Callable[[], Any], repeats: int) -> list:
  """Wall seconds of `repeats` calls of fn, each waited for (one host sync per call)."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def matmul_fn(mesh, dtype, n: int) -> Tuple[Callable[[], Any], float]:
  """(a jitted n×n matmul on every device of the mesh, ready to call; its FLOPs over the mesh)."""
  devices = mesh.devices.size
  sharding = parallel.batch_sharded(mesh)
  # Random operands: constant ones or zeros can run faster than real data (less switching power).
  ka, kb = jax.random.split(jax.random.PRNGKey(n))
  a = jax.device_put(jax.random.normal(ka, (devices, n, n), jnp.float32).astype(dtype), sharding)
  b = jax.device_put(jax.random.normal(kb, (devices, n, n), jnp.float32).astype(dtype), sharding)
  mm = jax.jit(jax.shard_map(lambda x, y: jnp.matmul(x, y, preferred_element_type=dtype), mesh=mesh,
                             in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
                             out_specs=P(parallel.DATA_AXIS)))
  jax.block_until_ready(mm(a, b))
  return (lambda: mm(a, b)), 2.0 * n ** 3 * devices


def matmul_peak(mesh, dtype, sizes: Optional[Sequence[int]] = None, repeats: int = 5) -> Dict[str, Any]:
  """Dense-matmul FLOP/s of the whole mesh: every device multiplies its own n×n matrices (best n, best of repeats)."""
  platform = mesh.devices.flat[0].platform
  sizes = sizes or ((1024, 2048) if platform == "cpu" else (4096, 8192))
  best = {"flops_per_s": 0.0}
  for n in sizes:
    fn, flops = matmul_fn(mesh, dtype, n)
    rate = flops / min(time_calls(fn, repeats))
    if rate > best["flops_per_s"]:
      best = {"flops_per_s": rate, "n": n, "fn": fn, "flops": flops}
  return best


def peak_sample(peak: Dict[str, Any], calls: int = 3) -> float:
  """The matmul rate right now: best of `calls` calls of the peak's matmul (a fraction of a second)."""
  return peak["flops"] / min(time_calls(peak["fn"], calls))


def contemporaneous_fractions(step_flops: float, times: Sequence[float], samples: Sequence[float]) -> list:
  """Each timed block's FLOP/s over the mean matmul rate sampled just before and just after it.

  samples[i] and samples[i + 1] bracket times[i]. On a machine shared with other
  work both rates fall together, so this ratio moves far less than either.
  """
  return [step_flops / t / ((samples[i] + samples[i + 1]) / 2) for i, t in enumerate(times)]


def forward_flops(model_config, image_size: int, channels: int = 3, dtype=jnp.float32) -> Dict[str, float]:
  """Forward FLOPs (XLA) and MACs (every kernel tap) of one image through the encoder, projector and one predictor."""
  from simdis_jax.models.network import network_from_config  # pylint: disable=g-import-not-at-top
  net = network_from_config(model_config, heads=("sema_dv",), dtype=dtype)
  x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  no_heads = {"params": {k: v for k, v in variables["params"].items() if not k.startswith("predictor")},
              "batch_stats": {k: v for k, v in variables["batch_stats"].items() if not k.startswith("predictor")}}
  encoder = jax.jit(lambda v, x: net.apply(v, x, train=False, features_only=True))
  projected = jax.jit(lambda v, x: net.clone(heads=()).apply(v, x, train=False))
  whole = jax.jit(lambda v, x: net.apply(v, x, train=False))
  counts = {}
  for name, fn, v in (("encoder", encoder, variables), ("projected", projected, no_heads), ("whole", whole, variables)):
    # Before optimisation (see reference_step_flops); where the backend cannot count that, on the CPU.
    lowered = flops_of(fn.lower(v, x))
    if not np.isfinite(lowered):
      on_cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
      v_cpu, x_cpu = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_cpu), (v, x))
      lowered = flops_of(fn.lower(v_cpu, x_cpu))
    counts[name] = (lowered, count_macs(fn, v, x))
  return {"encoder_flops": counts["encoder"][0], "encoder_macs": counts["encoder"][1],
          "projector_macs": counts["projected"][1] - counts["encoder"][1],
          "predictor_macs": counts["whole"][1] - counts["projected"][1]}


def count_macs(fn: Callable, *args) -> int:
  """Multiply-adds of fn(*args) counted as the paper's tools count them: every kernel tap at every output.

  XLA's cost analysis skips the taps that fall on a convolution's zero padding,
  which lowers a ResNet-18's count by ~6% at 224 px; this count includes them.
  """
  def walk(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval
        out = eqn.outvars[0].aval
        dn = eqn.params["dimension_numbers"]
        kernel_in = rhs.shape[dn.rhs_spec[1]]
        kernel_spatial = int(np.prod([rhs.shape[d] for d in dn.rhs_spec[2:]]))
        total += int(np.prod(out.shape)) * kernel_spatial * kernel_in
      elif name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval
        total += int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs.shape[d] for d in lhs_contract]))
      for sub in _sub_jaxprs(eqn):
        total += walk(sub)
    return total
  return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def _sub_jaxprs(eqn):
  """The jaxprs nested in an equation's parameters (pjit, custom_jvp, remat, ...)."""
  for value in eqn.params.values():
    for v in (value if isinstance(value, (list, tuple)) else (value,)):
      if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr
      elif hasattr(v, "eqns"):
        yield v


def peak_memory_bytes(devices) -> Optional[int]:
  """Largest peak memory in use over the devices, where the backend reports it (not on CPU)."""
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def benchmark(config: ml_collections.ConfigDict, steps: int = 10, warmup: int = 2,
              devices: Optional[Sequence[Any]] = None, matmul_sizes: Optional[Sequence[int]] = None,
              profile: bool = False) -> Dict:
  """Compiles and times the train step of `config` on synthetic data; returns every figure as a dict."""
  config = configuration.validate(config)
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(config.train.batch_size, mesh)
  num_devices = mesh.devices.size
  dtype = configuration.compute_dtype(config)

  _, state, train_step = build_step(config, mesh)
  images, labels = synthetic_batch(config, mesh)

  t0 = time.perf_counter()
  compiled = train_step.lower(state, images, labels).compile()
  compile_s = time.perf_counter() - t0
  # The compiled step is the per-device SPMD program: the mesh does that many FLOPs once per device.
  compiled_flops = flops_of(compiled) * num_devices
  step_flops = reference_step_flops(config, mesh, state, images, labels)

  for _ in range(warmup):
    state, metrics = compiled(state, images, labels)
  jax.block_until_ready(metrics)
  peak = matmul_peak(mesh, dtype, matmul_sizes)
  # Outside the steps' timing: the matmul rate right before the first step and right after
  # each step, so that a machine shared with other work gives figures against the peak of
  # the same moment ("paired": the sample after; "contemporaneous": the mean of both sides).
  times, peak_now, samples = [], [], [peak_sample(peak)]
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, images, labels)
    jax.block_until_ready(metrics["loss"])  # the one host sync of each step
    times.append(time.perf_counter() - t)
    peak_now.append(peak["flops"] / time_calls(peak["fn"], 1)[0])
    samples.append(max(peak_now[-1], peak_sample(peak, 2)))
  final_loss = float(metrics["loss"])
  profile_result = None
  if profile:
    box = [state]

    def one_step():
      box[0], step_metrics = compiled(box[0], images, labels)
      return step_metrics
    profile_result = top_ops(one_step)
    state = box[0]

  median = statistics.median(times)
  peak_rate = max([peak["flops_per_s"]] + peak_now + samples)
  achieved = step_flops / median
  channels = network_image_shape(config)[-1]
  student = forward_flops(config.model.student, config.data.image_size, channels, dtype)
  result = {
      "config": {"method": config.method, "views": list(config.views), "student_depth": config.model.student.depth,
                 "student_width": config.model.student.width, "teacher_depth": config.model.teacher.depth,
                 "teacher_width": config.model.teacher.width, "image_size": config.data.image_size,
                 "optimizer": config.optim.name, "sync_bn": config.model.sync_bn},
      "backend": jax.default_backend(),
      "devices": num_devices,
      "device_kind": mesh.devices.flat[0].device_kind,
      "processes": jax.process_count(),
      "compute_dtype": jnp.dtype(dtype).name,
      "conv_impl": ",".join(sorted(conv_impls(config))),
      "global_batch": config.train.batch_size,
      "compile_s": compile_s,
      "steps_timed": steps,
      "step_s_median": median,
      "step_s_min": min(times),
      "step_s_max": max(times),
      "step_s_iqr": float(np.subtract(*np.percentile(times, [75, 25]))) if len(times) > 1 else 0.0,
      "images_per_s": config.train.batch_size / median,
      "images_per_s_per_device": config.train.batch_size / median / num_devices,
      "flops_per_step": step_flops,
      "flops_per_step_compiled": compiled_flops,
      "flops_per_image": step_flops / config.train.batch_size,
      # Encoder alone, one image: MACs counted over every kernel tap (as the paper), FLOPs as XLA counts them.
      "student_forward_gmacs_per_image": student["encoder_macs"] / 1e9,
      "student_forward_xla_gflops_per_image": student["encoder_flops"] / 1e9,
      "student_predictor_gmacs_per_image": student["predictor_macs"] / 1e9,
      "teacher_forward_gmacs_per_image": None,
      "teacher_forward_xla_gflops_per_image": None,
      "achieved_flops_per_s": achieved,
      "matmul_peak_flops_per_s": peak_rate,
      "matmul_peak_n": peak.get("n"),
      "fraction_of_peak": achieved / peak_rate,
      # Median over steps of (step's FLOP/s) / (matmul FLOP/s measured right after it).
      "fraction_of_peak_paired": statistics.median(step_flops / t / p for t, p in zip(times, peak_now)),
      "matmul_peak_contemporaneous_flops_per_s": statistics.median(samples),
      # Median over steps of (step's FLOP/s) / (mean matmul FLOP/s sampled right before and after it).
      "fraction_of_peak_contemporaneous": statistics.median(contemporaneous_fractions(step_flops, times, samples)),
      "peak_memory_bytes": peak_memory_bytes(mesh.devices.flat),
      "final_loss": final_loss,
      "synthetic_data": True,
      "random_offline_teacher": config.method == "simdis_off",
  }
  if profile_result is not None:
    result["profile"] = profile_result
  if configuration.uses_teacher(config):
    teacher = forward_flops(config.model.teacher, config.data.image_size, channels, dtype)
    result["teacher_forward_gmacs_per_image"] = teacher["encoder_macs"] / 1e9
    result["teacher_forward_xla_gflops_per_image"] = teacher["encoder_flops"] / 1e9
  return result


# --- Interleaved A/B comparison ---

def parse_overrides(spec: str) -> Dict[str, Any]:
  """'model.conv_impl=xla;train.batch_size=64' -> {key: value}; values as Python literals, else strings.

  A key "resnet.NAME" sets that attribute of simdis_jax.models.resnet while the
  variant's step is traced (implementation switches); every other key is a config path.
  """
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in filter(None, (part.strip() for part in spec.split(";"))):
    if "=" not in item:
      raise ValueError(f"Override {item!r} is not key=value.")
    key, value = (x.strip() for x in item.split("=", 1))
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def _split_overrides(config, overrides: Dict[str, Any]):
  """(a copy of config with the config overrides applied, {resnet attribute: value})."""
  from simdis_jax.models import resnet  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  attrs = {}
  for key, value in overrides.items():
    if key.startswith("resnet."):
      name = key[len("resnet."):]
      if not hasattr(resnet, name):
        raise ValueError(f"simdis_jax.models.resnet has no attribute {name!r} (override {key!r}).")
      attrs[name] = value
      continue
    *path, leaf = key[len("config."):].split(".") if key.startswith("config.") else key.split(".")
    node = config
    for part in path:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"Unknown config key {key!r}.")
    node[leaf] = value
  return config, attrs


class _ModuleAttrs:
  """Sets attributes of simdis_jax.models.resnet for the duration of a with-block."""

  def __init__(self, attrs: Dict[str, Any]):
    self.attrs, self.saved = attrs, {}

  def __enter__(self):
    from simdis_jax.models import resnet  # pylint: disable=g-import-not-at-top
    for k, v in self.attrs.items():
      self.saved[k] = getattr(resnet, k)
      setattr(resnet, k, v)

  def __exit__(self, *exc):
    from simdis_jax.models import resnet  # pylint: disable=g-import-not-at-top
    for k, v in self.saved.items():
      setattr(resnet, k, v)


def compare(config: ml_collections.ConfigDict, variants: Sequence[str], rounds: int = 4, steps_per_round: int = 1,
            warmup: int = 1, devices: Optional[Sequence[Any]] = None,
            matmul_sizes: Optional[Sequence[int]] = None) -> Dict:
  """Times the train steps of several variants of `config` alternately in one process.

  Each variant is a string of ';'-separated overrides (see parse_overrides; "" = the
  config as given). All steps are compiled first; then each of `rounds` rounds runs
  `steps_per_round` steps of every variant, in A B C order on even rounds and C B A
  on odd ones (so a slow drift of the machine's speed hits all alike), with a matmul
  rate sample between blocks. On a shared machine this is the comparison to trust:
  the per-round ratio to the first variant pairs steps taken seconds apart.
  """
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(config.train.batch_size, mesh)
  built = []
  for spec in variants:
    cfg, attrs = _split_overrides(config, parse_overrides(spec))
    cfg = configuration.validate(cfg)
    with _ModuleAttrs(attrs):
      _, state, train_step = build_step(cfg, mesh)
      images, labels = synthetic_batch(cfg, mesh)
      t0 = time.perf_counter()
      compiled = train_step.lower(state, images, labels).compile()
      compile_s = time.perf_counter() - t0
      step_flops = reference_step_flops(cfg, mesh, state, images, labels)
    for _ in range(warmup):
      state, metrics = compiled(state, images, labels)
    jax.block_until_ready(metrics)
    built.append({"spec": spec, "config": cfg, "compiled": compiled, "state": state, "images": images,
                  "labels": labels, "compile_s": compile_s, "flops": step_flops, "times": [], "fractions": []})
  dtype = configuration.compute_dtype(built[0]["config"])
  peak = matmul_peak(mesh, dtype, matmul_sizes)
  samples = [peak_sample(peak)]
  for r in range(rounds):
    for v in (built if r % 2 == 0 else built[::-1]):
      block = []
      for _ in range(steps_per_round):
        t = time.perf_counter()
        v["state"], metrics = v["compiled"](v["state"], v["images"], v["labels"])
        jax.block_until_ready(metrics["loss"])
        block.append(time.perf_counter() - t)
      samples.append(peak_sample(peak))
      v["times"] += block
      v["fractions"] += contemporaneous_fractions(v["flops"], block, [samples[-2]] * len(block) + [samples[-1]])
      v["round_s"] = v.get("round_s", []) + [statistics.median(block)]
  peak_rate = max([peak["flops_per_s"]] + samples)
  base = built[0]
  out = []
  for v in built:
    median = statistics.median(v["times"])
    out.append({
        "variant": v["spec"] or "(as given)",
        "conv_impl": ",".join(sorted(conv_impls(v["config"]))),
        "global_batch": v["config"].train.batch_size,
        "compile_s": v["compile_s"],
        "steps_timed": len(v["times"]),
        "step_s_median": median,
        "step_s_min": min(v["times"]),
        "step_s_iqr": float(np.subtract(*np.percentile(v["times"], [75, 25]))) if len(v["times"]) > 1 else 0.0,
        "images_per_s": v["config"].train.batch_size / median,
        "flops_per_step": v["flops"],
        "achieved_flops_per_s": v["flops"] / median,
        "fraction_of_peak": v["flops"] / median / peak_rate,
        "fraction_of_peak_contemporaneous": statistics.median(v["fractions"]),
        # Median over rounds of this variant's block time / the first variant's in the same round.
        "time_ratio_to_first": statistics.median(a / b for a, b in zip(v["round_s"], base["round_s"])),
        "time_ratio_to_first_of_medians": median / statistics.median(base["times"]),
    })
  return {"rounds": rounds, "steps_per_round": steps_per_round, "devices": mesh.devices.size,
          "device_kind": mesh.devices.flat[0].device_kind, "matmul_peak_flops_per_s": peak_rate,
          "matmul_peak_n": peak.get("n"), "matmul_peak_contemporaneous_flops_per_s": statistics.median(samples),
          "variants": out}


COMPARE_FIELDS = ("variant", "conv_impl", "global_batch", "compile_s", "steps_timed", "step_s_median", "step_s_min",
                  "step_s_iqr", "images_per_s", "flops_per_step", "achieved_flops_per_s", "fraction_of_peak",
                  "fraction_of_peak_contemporaneous", "time_ratio_to_first", "time_ratio_to_first_of_medians")


def format_compare(c: Dict) -> str:
  """The comparison as a text table."""
  lines = [f"{len(c['variants'])} variants timed alternately: {c['rounds']} rounds x {c['steps_per_round']} step(s), "
           f"{c['devices']} x {c['device_kind']}; matmul peak {c['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s "
           f"(n={c['matmul_peak_n']}; median of the samples between blocks "
           f"{c['matmul_peak_contemporaneous_flops_per_s'] / 1e9:.1f})",
           f"{'variant':<44} {'step s':>8} {'IQR':>6} {'img/s':>7} {'GFLOP/s':>8} {'%peak':>6} {'%contemp':>8} "
           f"{'ratio':>6}"]
  for v in c["variants"]:
    lines.append(f"{v['variant'][:44]:<44} {v['step_s_median']:>8.3f} {v['step_s_iqr']:>6.3f} {v['images_per_s']:>7.1f} "
                 f"{v['achieved_flops_per_s'] / 1e9:>8.1f} {100 * v['fraction_of_peak']:>5.1f}% "
                 f"{100 * v['fraction_of_peak_contemporaneous']:>7.1f}% {v['time_ratio_to_first']:>6.3f}")
  lines.append("ratio: median over rounds of the variant's step time / the first variant's in the same round.")
  return "\n".join(lines)


# --- Where the time goes ---

def breakdown(config: ml_collections.ConfigDict, repeats: int = 5, devices=None) -> Dict[str, float]:
  """Median seconds of the step's parts run alone on the mesh: augmentation, each network's passes, optimizer."""
  from simdis_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  config = configuration.validate(config)
  mesh = parallel.make_mesh(devices)
  networks, state, _ = build_step(config, mesh)
  images, _ = synthetic_batch(config, mesh)
  key = jax.random.PRNGKey(0)
  if images.ndim == 5:  # host crops (streamed datasets)
    two_views = jax.jit(lambda k, x: augment.two_views_of_crops(k, x, config.data.augment))
  else:
    two_views = jax.jit(lambda k, x: augment.two_views(k, x, config.data.augment, out_size=config.data.image_size))
  v1, v2 = two_views(key, images)
  parts = {"augment_two_views": lambda: two_views(key, images)}
  axis = parallel.DATA_AXIS if config.model.sync_bn else None
  spec = (P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS))

  def per_device(fn):
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=P(), check_vma=False))

  nets = {"student": (networks.student, state.student.params, state.student.batch_stats),
          "student_ema": (networks.student_ema, state.student.ema_params, state.student.ema_batch_stats)}
  if networks.teacher is not None:
    nets["teacher"] = (networks.teacher, state.teacher.params, state.teacher.batch_stats)
    nets["teacher_ema"] = (networks.teacher_ema, state.teacher.ema_params, state.teacher.ema_batch_stats)
  for name, (net, params, stats) in nets.items():
    def forward(p, a, b, net=net, stats=stats):
      (out1, out2), _ = step_lib.forward_views(net, p, stats, (a, b), "train", True, axis)
      return jnp.sum(out1["projection"]) + jnp.sum(out2["projection"])
    fwd = per_device(forward)
    parts[f"{name}_forward_2views"] = functools.partial(fwd, params, v1, v2)
    if not name.endswith("_ema"):
      grad = per_device(lambda p, a, b, forward=forward: jax.lax.pmean(jax.grad(forward)(p, a, b), parallel.DATA_AXIS))
      parts[f"{name}_forward_backward_2views"] = functools.partial(grad, params, v1, v2)
  results = {}
  for name, fn in parts.items():
    jax.block_until_ready(fn())
    results[name] = statistics.median(time_calls(fn, repeats))
  return results


def top_ops(run: Callable[[], Any], top: int = 15, calls: int = 2) -> Dict:
  """The XLA ops that take the most time in `calls` traced calls of `run` (jax.profiler), with their share."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(calls):
      jax.block_until_ready(run())
    jax.profiler.stop_trace()
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  by_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if line.name.startswith("python") or "PjRt" in line.name:
        continue  # host-side waits, not device work
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "$")):
          by_op[event.name] += event.duration_ns
  total = sum(by_op.values()) or 1
  by_kind = collections.Counter()
  for name, ns in by_op.items():
    by_kind[name.split(".")[0]] += ns  # "ynn_fusion.12" -> "ynn_fusion"
  return {"ops_total_s_per_call": total / 1e9 / calls,
          "top_kinds": [(name, ns / 1e9 / calls, ns / total) for name, ns in by_kind.most_common(top)],
          "top_ops": [(name, ns / 1e9 / calls, ns / total) for name, ns in by_op.most_common(top)]}


# --- Table 1 ---

def table1_configs(image_size: int = 224, batch_size: int = 2) -> Dict[str, ml_collections.ConfigDict]:
  """The training runs behind Table 1's rows (standard setting), at `image_size` and a small batch."""
  spec = importlib.util.spec_from_file_location("r50_r18", BENCHMARK_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return {name: module.get_config(f"{name},{batch_size},{image_size}")
          for name in ("byol_r50", "off", "on", "on_7v")}


def step_flops_per_image(config, mesh) -> float:
  """XLA's FLOPs per source image of one train step of `config` with lax convolutions (lowered, not compiled)."""
  _, state, _ = build_step(config, mesh)
  images, labels = synthetic_batch(config, mesh)
  return reference_step_flops(config, mesh, state, images, labels) / config.train.batch_size


def table1(image_size: int = 224, batch_size: int = 2) -> Dict:
  """Per-image training cost of SimDis-Off, SimDis-On and SimDis-On-7v: measured FLOPs beside the paper's formula."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  configs = table1_configs(image_size, batch_size)
  step = {name: step_flops_per_image(c, mesh) for name, c in configs.items()}
  teacher = forward_flops(configs["on"].model.teacher, image_size)
  student = forward_flops(configs["on"].model.student, image_size)
  t, s = teacher["encoder_macs"] / 1e9, student["encoder_macs"] / 1e9
  heads_7v = 6 * student["predictor_macs"] / 1e9  # six extra predictors on one view: the paper's "12M"
  rows = {
      # Offline trains the teacher (BYOL) first, then the student against the frozen teacher.
      "SimDis-Off": {"measured_train_gflops": (step["byol_r50"] + step["off"]) / 1e9,
                     "formula_measured_gmacs": 2 * t + s},
      "SimDis-On": {"measured_train_gflops": step["on"] / 1e9, "formula_measured_gmacs": t + s},
      "SimDis-On-7v": {"measured_train_gflops": step["on_7v"] / 1e9, "formula_measured_gmacs": t + s + heads_7v},
  }
  predicted = predicted_train_gflops(PAPER_TEACHER_GMACS, PAPER_STUDENT_GMACS, PAPER_MULTIVIEW_GMACS / 6)
  for name, row in rows.items():
    views, paper, formula = PAPER_TABLE1[name]
    row.update(views=views, paper_formula=formula, paper_gmacs=paper,
               paper_ratio_to_on=paper / PAPER_TABLE1["SimDis-On"][1],
               predicted_train_gflops=predicted[name],
               measured_ratio_to_on=row["measured_train_gflops"] / (step["on"] / 1e9))
  return {"image_size": image_size, "teacher_forward_gmacs": t, "student_forward_gmacs": s,
          "extra_7v_head_gmacs": heads_7v, "step_gflops_per_image": {k: v / 1e9 for k, v in step.items()},
          "predicted_offline_step_gflops": predicted["offline step"],
          "predicted_offline_to_online_step": predicted["offline step"] / predicted["SimDis-On"],
          "measured_offline_to_online_step": step["off"] / step["on"], "rows": rows}


def predicted_train_gflops(teacher_gmacs: float, student_gmacs: float, predictor_gmacs: float) -> Dict[str, float]:
  """Table 1's forward costs turned into training FLOPs per image: backward = 2x forward, 2 views, 2 FLOPs/MAC.

  A trained network costs 3 forwards per view, a target (EMA or frozen) network 1.
  """
  t, s = teacher_gmacs, student_gmacs
  byol_teacher = 2 * 2 * (3 * t + t)
  online = 2 * 2 * (3 * t + t + 3 * s + s)
  offline_step = 2 * 2 * (t + 3 * s + s)  # frozen teacher EMA forward + the student's BYOL pair
  return {"SimDis-Off": byol_teacher + offline_step, "SimDis-On": online,
          "SimDis-On-7v": online + 2 * 2 * 3 * 6 * predictor_gmacs, "offline step": offline_step}


def format_table1(t: Dict) -> str:
  """Table 1 as text: the paper's formula, the same formula with measured forward MACs, measured training FLOPs."""
  lines = [f"Table 1 per training image and epoch at {t['image_size']} px (M x N = images x epochs).",
           f"Measured forward MACs (every kernel tap, as the paper counts): teacher R50 {t['teacher_forward_gmacs']:.2f} G "
           f"(paper 4.1 G), student R18 {t['student_forward_gmacs']:.2f} G (paper 1.8 G), six extra "
           f"7v predictors on one view {t['extra_7v_head_gmacs'] * 1e3:.0f} M (paper 12 M).",
           "",
           f"{'method':<13} {'views':>5}  {'paper formula':<28} {'paper G':>8} {'ours G':>8} "
           f"{'paper /On':>9} {'predicted':>10} {'measured':>9} {'measured /On':>12}"]
  for name, r in t["rows"].items():
    lines.append(f"{name:<13} {r['views']:>5}  {r['paper_formula']:<28} {r['paper_gmacs']:>8.2f} "
                 f"{r['formula_measured_gmacs']:>8.2f} {r['paper_ratio_to_on']:>9.2f} "
                 f"{r['predicted_train_gflops']:>10.1f} {r['measured_train_gflops']:>9.1f} "
                 f"{r['measured_ratio_to_on']:>12.2f}")
  lines += ["",
            "paper G / ours G: the paper's forward-MAC formula (G MACs per image per epoch), with its",
            "  constants and with our measured ones. It counts forward passes only.",
            "predicted / measured: training GFLOPs per image. predicted = Table 1's constants with",
            "  backward = 2x forward (trained nets 3 forwards per view, EMA/frozen targets 1), 2 views;",
            "  measured = XLA's count of the whole train steps (lax convolutions: no padding taps, so",
            "  ~4% under the prediction). SimDis-Off = its BYOL teacher run "
            f"({t['step_gflops_per_image']['byol_r50']:.1f}) + its student step ({t['step_gflops_per_image']['off']:.1f}).",
            f"Offline step / online step: predicted {t['predicted_offline_to_online_step']:.3f}, "
            f"measured {t['measured_offline_to_online_step']:.3f}."]
  return "\n".join(lines)


# --- Output ---

def format_result(r: Dict) -> str:
  """The benchmark's figures as human-readable lines."""
  c = r["config"]
  g = 1e9

  def gmac(which):
    macs, xla = r[f"{which}_forward_gmacs_per_image"], r[f"{which}_forward_xla_gflops_per_image"]
    return "n/a" if macs is None else f"{macs:.3f} G MACs ({xla:.3f} XLA GFLOPs)"

  mem = "not reported by this backend" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"
  return "\n".join([
      f"{c['method']} views={','.join(c['views'])}: student R{c['student_depth']}/w{c['student_width']}, "
      + (f"teacher R{c['teacher_depth']}/w{c['teacher_width']}, " if r["teacher_forward_gmacs_per_image"] else "")
      + f"{c['image_size']} px, {c['optimizer']}, "
      f"sync_bn={c['sync_bn']}" + (" (offline teacher: random weights)" if r["random_offline_teacher"] else ""),
      f"devices           {r['devices']} x {r['device_kind']} ({r['backend']}), {r['processes']} process(es)",
      f"compute dtype     {r['compute_dtype']} (params and optimizer state float32)",
      f"global batch      {r['global_batch']} source images (2 views each), synthetic",
      f"compile           {r['compile_s']:.1f} s",
      f"step time         median {r['step_s_median'] * 1e3:.1f} ms over {r['steps_timed']} steps "
      f"(min {r['step_s_min'] * 1e3:.1f}, max {r['step_s_max'] * 1e3:.1f}, IQR {r['step_s_iqr'] * 1e3:.1f})",
      f"throughput        {r['images_per_s']:.1f} images/s ({r['images_per_s_per_device']:.1f} per device)",
      f"FLOPs per step    {r['flops_per_step'] / g:.1f} G ({r['flops_per_image'] / g:.2f} G per image; XLA's count "
      f"of the unoptimised step with lax convolutions; the compiled {r['conv_impl']} program's own count: "
      f"{r['flops_per_step_compiled'] / g:.1f} G)",
      f"forward / image   student {gmac('student')}, teacher {gmac('teacher')} at {c['image_size']} px "
      "(encoder alone)",
      f"achieved          {r['achieved_flops_per_s'] / g:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f}% of "
      f"the measured matmul peak {r['matmul_peak_flops_per_s'] / g:.1f} GFLOP/s (n={r['matmul_peak_n']}, "
      f"{r['compute_dtype']}); paired with a matmul after each step: {100 * r['fraction_of_peak_paired']:.1f}%; "
      f"against the matmul rate sampled before and after each step (median "
      f"{r['matmul_peak_contemporaneous_flops_per_s'] / g:.1f} GFLOP/s): {100 * r['fraction_of_peak_contemporaneous']:.1f}%",
      f"peak memory       {mem}",
  ])


def main(argv):
  """Command line: see the module docstring."""
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.table1:
    t = table1(f.table1_image_size)
    print(format_table1(t))
    print(json.dumps(t))
    return
  if f.config is None:
    sys.exit("--config is required (or --table1).")
  if f.compare:
    c = compare(f.config, f.compare, rounds=f.rounds, steps_per_round=f.steps_per_round, warmup=f.warmup)
    print(format_compare(c))
    print(json.dumps(c))
    return
  if f.breakdown:
    parts = breakdown(f.config)
    print("Parts of the step run alone (median s):")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
      print(f"  {k:<36} {v * 1e3:9.1f} ms")
  r = benchmark(f.config, steps=f.steps, warmup=f.warmup, profile=f.profile)
  if f.breakdown:
    r["breakdown_s"] = parts
  print(format_result(r))
  if f.profile:
    print("Where the step's time goes (XLA op kinds, share of op time over all threads):")
    for name, seconds, share in r["profile"]["top_kinds"]:
      print(f"  {name:<36} {seconds * 1e3:9.1f} ms {100 * share:5.1f}%")
  print(json.dumps(r))


if __name__ == "__main__":
  from absl import app, flags as absl_flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "A pretraining config (configs/*.py).", lock_config=False)
  absl_flags.DEFINE_integer("steps", 10, "Timed steps after warm-up.")
  absl_flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  absl_flags.DEFINE_bool("breakdown", False, "Also time the step's parts alone (augmentation, networks).")
  absl_flags.DEFINE_bool("profile", False, "Also trace two steps and print the XLA op kinds that take the time.")
  absl_flags.DEFINE_multi_string("compare", None, "Time variants of --config alternately in one process; each "
                                 "flag is one variant: ';'-separated key=value overrides of the config (or "
                                 "resnet.ATTR=value), '' for the config as given. Give it twice or more.")
  absl_flags.DEFINE_integer("rounds", 4, "--compare: rounds (each runs every variant once, order alternating).")
  absl_flags.DEFINE_integer("steps_per_round", 1, "--compare: timed steps of a variant per round.")
  absl_flags.DEFINE_bool("table1", False, "Print the paper's Table 1 from measured FLOPs and exit.")
  absl_flags.DEFINE_integer("table1_image_size", 224, "Image size for --table1.")
  app.run(main)
