"""The benchmark's command line: flags, then one of the step timing, --compare, --peer, --breakdown or --table1.

    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,64 --steps 10
    python -m simdis_jax.benchmark --config configs/demo.py --steps 10 --breakdown [--profile]
    python -m simdis_jax.benchmark --table1            # per-image training cost, 224 px
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,32 \\
        --compare=model.conv_impl=xla --compare=model.conv_impl=matmul --rounds 4   # interleaved A/B
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:byol_r18,32 --peer ~/SimDis  # vs the authors
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from simdis_jax.tools.benchmark.breakdown import breakdown
from simdis_jax.tools.benchmark.compare import compare, format_compare
from simdis_jax.tools.benchmark.peer import format_race, race
from simdis_jax.tools.benchmark.table1 import format_table1, table1
from simdis_jax.tools.benchmark.timing import benchmark, format_result

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags (called once, by the entry module, before absl parses argv)."""
  config_flags.DEFINE_config_file("config", None, "A pretraining config (configs/*.py).", lock_config=False)
  flags.DEFINE_integer("steps", 10, "Timed steps after warm-up.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  flags.DEFINE_bool("breakdown", False, "Also time the step's parts alone (augmentation, networks).")
  flags.DEFINE_bool("profile", False, "Also trace two steps and print the XLA op kinds that take the time.")
  flags.DEFINE_multi_string(
    "compare",
    None,
    "Time variants of --config alternately in one process; each "
    "flag is one variant: ';'-separated key=value overrides of the config (e.g. "
    "model.conv_impl=matmul;model.matmul_conv_vjp=False), '' for the config as given. "
    "Give it twice or more.",
  )
  flags.DEFINE_string(
    "peer",
    None,
    "Race the authors' PyTorch step (built from this path: your clone of "
    "github.com/JindongGu/SimDis) against ours, alternated in one process.",
  )
  flags.DEFINE_integer("rounds", 4, "--compare/--peer: rounds (each runs every variant once, order alternating).")
  flags.DEFINE_integer("steps_per_round", 1, "--compare/--peer: timed steps of a variant per round.")
  flags.DEFINE_bool("table1", False, "Print the paper's Table 1 from measured FLOPs and exit.")
  flags.DEFINE_integer("table1_image_size", 224, "Image size for --table1.")


def main(argv) -> None:
  """Runs what the flags ask for and prints its figures, then one JSON line of them."""
  del argv
  f = FLAGS
  if f.table1:
    t = table1(f.table1_image_size)
    print(format_table1(t))
    print(json.dumps(t))
    return
  if f.config is None:
    sys.exit("--config is required (or --table1).")
  if f.peer:
    r = race(f.config, f.peer, rounds=f.rounds, steps_per_round=f.steps_per_round, warmup=f.warmup)
    print(format_race(r))
    print(json.dumps(r))
    return
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
