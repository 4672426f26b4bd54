"""Timing the train step on synthetic data: step time, the matmul peak of the same run, and the fraction of it.

The step is built exactly as training builds it (`runs.build`: same networks,
optimizer and state; the same mesh and jitted, state-donating step) but fed
synthetic uint8 images of the config's size, so no dataset is needed.
SimDis-Off's frozen teacher has random weights here: its cost does not depend
on its values. FLOPs are counted by `simdis_jax.flops` with lax convolutions
whatever the config runs; the peak is a jitted matmul at the step's compute
dtype on every device of the mesh, measured in the same run.
"""

import statistics
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from simdis_jax import configuration, flops, methods, parallel, runs
from simdis_jax.data import datasets
from simdis_jax.models.network import compute_dtype, conv_impl
from simdis_jax.step import make_train_step
from simdis_jax.tools.benchmark.profile import top_ops

# Every field of the benchmark's JSON line.
FIELDS = (
  "config",
  "backend",
  "devices",
  "device_kind",
  "processes",
  "compute_dtype",
  "global_batch",
  "compile_s",
  "steps_timed",
  "step_s_median",
  "step_s_min",
  "step_s_max",
  "step_s_iqr",
  "images_per_s",
  "images_per_s_per_device",
  "flops_per_step",
  "flops_per_step_compiled",
  "conv_impl",
  "flops_per_image",
  "student_forward_gmacs_per_image",
  "student_forward_xla_gflops_per_image",
  "student_predictor_gmacs_per_image",
  "teacher_forward_gmacs_per_image",
  "teacher_forward_xla_gflops_per_image",
  "achieved_flops_per_s",
  "matmul_peak_flops_per_s",
  "matmul_peak_n",
  "fraction_of_peak",
  "fraction_of_peak_paired",
  "matmul_peak_contemporaneous_flops_per_s",
  "fraction_of_peak_contemporaneous",
  "peak_memory_bytes",
  "final_loss",
  "synthetic_data",
  "random_offline_teacher",
)


# --- Measuring ---


def raw_image_shape(config):
  """Shape of one synthetic example as the input pipeline hands it to the step.

  In-memory datasets (Fashion-MNIST): the whole image (the device crops). Streamed datasets: the two
  host crops [2, S, S, 3] (the device does everything but the crop), as in training.
  """
  dataset = datasets.get(config.data.name)
  if dataset.loader is not None:
    return (dataset.image_size, dataset.image_size, dataset.channels)
  return (2, config.data.image_size, config.data.image_size, 3)


def synthetic_batch(config, mesh, seed: int = 0):
  """A global (uint8 images, int32 labels) batch of the config's size, sharded over the mesh."""
  rng = np.random.default_rng(seed)
  n = config.train.batch_size
  images = rng.integers(0, 256, (n,) + raw_image_shape(config), dtype=np.uint8)
  labels = rng.integers(0, max(config.probe.num_classes, 2), (n,), dtype=np.int32)
  sharding = parallel.batch_sharded(mesh)
  return jax.device_put(images, sharding), jax.device_put(labels, sharding)


def build_step(config, mesh, total_steps: int = 1000):
  """(networks, fresh replicated state, jitted train step) built as train.py builds them."""
  networks, schedule, tx, create = runs.build(config, total_steps, total_steps // 10)
  state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
  return networks, state, make_train_step(config, networks, tx, schedule, total_steps, mesh)


def reference_step_flops(config, mesh, state, images, labels, train_step=None) -> float:
  """FLOPs of one step of the whole mesh written with lax convolutions: what every figure is measured against.

  conv_impl="matmul" also multiplies the zero padding taps (a quarter of a
  ResNet-18's work at 64 px, whose last stage has 2x2 maps); counting those would
  flatter the achieved FLOP/s, so the lax form is counted whatever the config runs
  (`train_step` is reused when the config already runs it).
  """
  same = train_step if conv_impls(config) == {"xla"} else None
  count = flops.step_flops(config, mesh, state, images, labels, same, conv_impl=None if same else "xla")
  return count * mesh.devices.size


def conv_impls(config) -> set:
  """The convolution implementations the config's networks use."""
  nets = [config.model.student] + ([config.model.teacher] if configuration.uses_teacher(config) else [])
  return {conv_impl(config, n) for n in nets}


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
  mm = jax.jit(
    jax.shard_map(
      lambda x, y: jnp.matmul(x, y, preferred_element_type=dtype),
      mesh=mesh,
      in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
      out_specs=P(parallel.DATA_AXIS),
    )
  )
  jax.block_until_ready(mm(a, b))
  return (lambda: mm(a, b)), 2.0 * n**3 * devices


def matmul_peak(mesh, dtype, sizes: Optional[Sequence[int]] = None, repeats: int = 5) -> Dict[str, Any]:
  """Dense-matmul FLOP/s of the whole mesh: every device multiplies its own n×n matrices (best n, best of repeats)."""
  platform = mesh.devices.flat[0].platform
  sizes = sizes or ((1024, 2048) if platform == "cpu" else (4096, 8192))
  best = {"flops_per_s": 0.0}
  for n in sizes:
    fn, count = matmul_fn(mesh, dtype, n)
    rate = count / min(time_calls(fn, repeats))
    if rate > best["flops_per_s"]:
      best = {"flops_per_s": rate, "n": n, "fn": fn, "flops": count}
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


def benchmark(
  config: ml_collections.ConfigDict,
  steps: int = 10,
  warmup: int = 2,
  devices: Optional[Sequence[Any]] = None,
  matmul_sizes: Optional[Sequence[int]] = None,
  profile: bool = False,
) -> Dict:
  """Compiles and times the train step of `config` on synthetic data; returns every figure as a dict."""
  config = configuration.validate(config)
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(config.train.batch_size, mesh)
  num_devices = mesh.devices.size
  dtype = compute_dtype(config)

  _, state, train_step = build_step(config, mesh)
  images, labels = synthetic_batch(config, mesh)

  t0 = time.perf_counter()
  compiled = train_step.lower(state, images, labels).compile()
  compile_s = time.perf_counter() - t0
  # The compiled step is the per-device SPMD program: the mesh does that many FLOPs once per device.
  compiled_flops = flops.flops_of(compiled) * num_devices
  step_flops = reference_step_flops(config, mesh, state, images, labels, train_step)

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
  channels = runs.image_channels(config.data.name)
  student = flops.forward_flops(config.model.student, config.data.image_size, channels, dtype)
  result = {
    "config": {
      "method": config.method,
      "views": list(config.views),
      "student_depth": config.model.student.depth,
      "student_width": config.model.student.width,
      "teacher_depth": config.model.teacher.depth,
      "teacher_width": config.model.teacher.width,
      "image_size": config.data.image_size,
      "optimizer": config.optim.name,
      "sync_bn": config.model.sync_bn,
    },
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
    "random_offline_teacher": methods.teacher_kind(config) == "offline",
  }
  if profile_result is not None:
    result["profile"] = profile_result
  if configuration.uses_teacher(config):
    teacher = flops.forward_flops(config.model.teacher, config.data.image_size, channels, dtype)
    result["teacher_forward_gmacs_per_image"] = teacher["encoder_macs"] / 1e9
    result["teacher_forward_xla_gflops_per_image"] = teacher["encoder_flops"] / 1e9
  return result


# --- Output ---


def format_result(r: Dict) -> str:
  """The benchmark's figures as human-readable lines."""
  c = r["config"]
  g = 1e9

  def gmac(which):
    macs, xla = r[f"{which}_forward_gmacs_per_image"], r[f"{which}_forward_xla_gflops_per_image"]
    return "n/a" if macs is None else f"{macs:.3f} G MACs ({xla:.3f} XLA GFLOPs)"

  mem = (
    "not reported by this backend" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB"
  )
  return "\n".join(
    [
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
      f"forward / image   student {gmac('student')}, teacher {gmac('teacher')} at {c['image_size']} px (encoder alone)",
      f"achieved          {r['achieved_flops_per_s'] / g:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f}% of "
      f"the measured matmul peak {r['matmul_peak_flops_per_s'] / g:.1f} GFLOP/s (n={r['matmul_peak_n']}, "
      f"{r['compute_dtype']}); paired with a matmul after each step: {100 * r['fraction_of_peak_paired']:.1f}%; "
      f"against the matmul rate sampled before and after each step (median "
      f"{r['matmul_peak_contemporaneous_flops_per_s'] / g:.1f} GFLOP/s): "
      f"{100 * r['fraction_of_peak_contemporaneous']:.1f}%",
      f"peak memory       {mem}",
    ]
  )
