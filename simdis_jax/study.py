"""A study: many pretraining runs (presets x seeds), then one report (console script simdis-study).

    simdis-study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study
    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study
    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir <dir> --dry_run
    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir <dir> --report_only

Each run is `python -m simdis_jax.main --config <presets>:<preset> --config.seed=<seed>
--workdir <workdir>/<preset>/seed<seed>` in a subprocess (tools/study/plan.py), resumable and
archived (tools/study/runner.py, archive.py); the report (tools/study/report.py) is the
study's section of `config.results` plus figures in `config.figures`. What a study runs and
reports (presets, seeds, the paper's figures, labels, comparisons) is its config file.
"""

from absl import app

from simdis_jax import cli
from simdis_jax.tools.study import cli as study_cli


def run() -> None:
  """Console script simdis-study (and `python -m simdis_jax.study`); code in simdis_jax/tools/study/."""
  study_cli.define_flags()
  app.run(study_cli.main, flags_parser=lambda argv: cli.parse_global(argv, __doc__, lambda: study_cli.CONFIG_NOTE))


if __name__ == "__main__":
  run()
