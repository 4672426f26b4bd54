"""Entry point of the step benchmark: `python -m simdis_jax.benchmark ...` (flags and code in simdis_jax/tools/benchmark/).

    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,64 --steps 10
    python -m simdis_jax.benchmark --table1
"""

from absl import app

from simdis_jax.tools.benchmark import cli

if __name__ == "__main__":
  cli.define_flags()
  app.run(cli.main)
