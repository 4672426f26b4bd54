"""Entry point of a study (many pretraining runs, presets x seeds, then one report); code in simdis_jax/tools/study/.

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

from simdis_jax.tools.study import cli

if __name__ == "__main__":
  cli.define_flags()
  app.run(cli.main)
