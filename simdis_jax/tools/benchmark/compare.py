"""Interleaved A/B timing: variants of one config, each a set of ordinary config overrides, in one process.

    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,32 \\
        --compare=model.conv_impl=xla --compare=model.conv_impl=matmul --rounds 4
    ... --compare= --compare='model.matmul_conv_vjp=False'   # an implementation switch is a config key too
"""

import ast
import statistics
import time
from typing import Any, Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np

from simdis_jax import configuration, parallel
from simdis_jax.models.network import compute_dtype
from simdis_jax.tools.benchmark.timing import (
  build_step,
  contemporaneous_fractions,
  conv_impls,
  matmul_peak,
  peak_sample,
  reference_step_flops,
  synthetic_batch,
)


def parse_overrides(spec: str) -> Dict[str, Any]:
  """'model.conv_impl=xla;train.batch_size=64' -> {config key: value}; values as Python literals, else strings."""
  out = {}
  for item in filter(None, (part.strip() for part in spec.split(";"))):
    if "=" not in item:
      raise ValueError(f"Override {item!r} is not key=value (e.g. 'model.conv_impl=xla').")
    key, value = (x.strip() for x in item.split("=", 1))
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def apply_overrides(config, overrides: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with each 'a.b.c' (or 'config.a.b.c') key set to its value; unknown keys are an error."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *path, leaf = (key[len("config.") :] if key.startswith("config.") else key).split(".")
    node = config
    for part in path:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ValueError(
        f"Unknown config key {key!r} in --compare: give a key of the config, e.g. "
        "'model.conv_impl=xla' or 'model.matmul_conv_vjp=False'."
      )
    node[leaf] = value
  return config


def compare(
  config: ml_collections.ConfigDict,
  variants: Sequence[str],
  rounds: int = 4,
  steps_per_round: int = 1,
  warmup: int = 1,
  devices: Optional[Sequence[Any]] = None,
  matmul_sizes: Optional[Sequence[int]] = None,
) -> Dict:
  """Times the train steps of several variants of `config` alternately in one process.

  Each variant is a string of ';'-separated config overrides (see parse_overrides;
  "" = the config as given). All steps are compiled first; then each of `rounds` rounds runs
  `steps_per_round` steps of every variant, in A B C order on even rounds and C B A
  on odd ones (so a slow drift of the machine's speed hits all alike), with a matmul
  rate sample between blocks. On a shared machine this is the comparison to trust:
  the per-round ratio to the first variant pairs steps taken seconds apart.
  """
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_size(config.train.batch_size, mesh)
  built = []
  for spec in variants:
    cfg = configuration.validate(apply_overrides(config, parse_overrides(spec)))
    _, state, train_step = build_step(cfg, mesh)
    images, labels = synthetic_batch(cfg, mesh)
    t0 = time.perf_counter()
    compiled = train_step.lower(state, images, labels).compile()
    compile_s = time.perf_counter() - t0
    step_flops = reference_step_flops(cfg, mesh, state, images, labels, train_step)
    for _ in range(warmup):
      state, metrics = compiled(state, images, labels)
    jax.block_until_ready(metrics)
    built.append(
      {
        "spec": spec,
        "config": cfg,
        "compiled": compiled,
        "state": state,
        "images": images,
        "labels": labels,
        "compile_s": compile_s,
        "flops": step_flops,
        "times": [],
        "fractions": [],
      }
    )
  dtype = compute_dtype(built[0]["config"])
  peak = matmul_peak(mesh, dtype, matmul_sizes)
  samples = [peak_sample(peak)]
  for r in range(rounds):
    for v in built if r % 2 == 0 else built[::-1]:
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
    out.append(
      {
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
      }
    )
  return {
    "rounds": rounds,
    "steps_per_round": steps_per_round,
    "devices": mesh.devices.size,
    "device_kind": mesh.devices.flat[0].device_kind,
    "matmul_peak_flops_per_s": peak_rate,
    "matmul_peak_n": peak.get("n"),
    "matmul_peak_contemporaneous_flops_per_s": statistics.median(samples),
    "variants": out,
  }


COMPARE_FIELDS = (
  "variant",
  "conv_impl",
  "global_batch",
  "compile_s",
  "steps_timed",
  "step_s_median",
  "step_s_min",
  "step_s_iqr",
  "images_per_s",
  "flops_per_step",
  "achieved_flops_per_s",
  "fraction_of_peak",
  "fraction_of_peak_contemporaneous",
  "time_ratio_to_first",
  "time_ratio_to_first_of_medians",
)


def format_compare(c: Dict) -> str:
  """The comparison as a text table."""
  lines = [
    f"{len(c['variants'])} variants timed alternately: {c['rounds']} rounds x {c['steps_per_round']} step(s), "
    f"{c['devices']} x {c['device_kind']}; matmul peak {c['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s "
    f"(n={c['matmul_peak_n']}; median of the samples between blocks "
    f"{c['matmul_peak_contemporaneous_flops_per_s'] / 1e9:.1f})",
    f"{'variant':<44} {'step s':>8} {'IQR':>6} {'img/s':>7} {'GFLOP/s':>8} {'%peak':>6} {'%contemp':>8} {'ratio':>6}",
  ]
  for v in c["variants"]:
    lines.append(
      f"{v['variant'][:44]:<44} {v['step_s_median']:>8.3f} {v['step_s_iqr']:>6.3f} "
      f"{v['images_per_s']:>7.1f} "
      f"{v['achieved_flops_per_s'] / 1e9:>8.1f} {100 * v['fraction_of_peak']:>5.1f}% "
      f"{100 * v['fraction_of_peak_contemporaneous']:>7.1f}% {v['time_ratio_to_first']:>6.3f}"
    )
  lines.append("ratio: median over rounds of the variant's step time / the first variant's in the same round.")
  return "\n".join(lines)
