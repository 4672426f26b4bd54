"""The step benchmark (console script simdis-benchmark): timing, --compare, --breakdown, --profile, --table1.

    simdis-benchmark --config configs/benchmark/r50_r18.py:on_7v,64 --steps 10
    simdis-benchmark --table1
    python -m simdis_jax.benchmark ...      (the same command)

Flags and code in simdis_jax/tools/benchmark/.
"""

from absl import app

from simdis_jax import cli
from simdis_jax.tools.benchmark import cli as benchmark_cli


def run() -> None:
  """Console script simdis-benchmark (and `python -m simdis_jax.benchmark`)."""
  benchmark_cli.define_flags()
  app.run(benchmark_cli.main, flags_parser=lambda argv: cli.parse_global(argv, __doc__, lambda: cli.CONFIG_KEYS_NOTE))


if __name__ == "__main__":
  run()
