"""The Fashion-MNIST study (issue #7): which presets, which seeds, in which order.

    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study

Each entry is "<preset>:<seeds>"; runs go in this order, so that an interrupted study has the
central comparison (student alone vs SimDis-Off-7v vs SimDis-On-7v, three seeds) first. The
offline teacher (byol_teacher, seed 0) is trained once and shared by every offline student.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.presets = "configs/fashion_mnist/presets.py"
  c.runs = (
      "byol_teacher:0", "untrained_student:0",
      "byol_student:0", "simdis_off_7v:0", "simdis_on_7v:0",
      "byol_student:1", "simdis_off_7v:1", "simdis_on_7v:1",
      "byol_student:2", "simdis_off_7v:2", "simdis_on_7v:2",
      "supervised:0,1,2",
      "simdis_off_2v:0", "simdis_on_2v:0",
      "off_t_sv:0", "off_t_dv:0", "off_tema_sv:0",
  )
  c.teacher_run = "byol_teacher:0"  # --config.teacher.workdir of every simdis_off preset
  # After each run: a second linear evaluation, 80 epochs on cached features (converged; ~20 s),
  # in <run>/linear_fast ("" = none).
  c.fast_linear = "configs/fashion_mnist/linear_eval.py:authors,fast"
  c.fast_linear_overrides = ()
  # Extra flags for every run, e.g. ("--config.train.epochs=1",) for a quicker pass (changes its numbers).
  c.overrides = ()
  # Each finished run's record (and the offline teacher's final checkpoint) is copied here, and
  # restored from here on a fresh clone: commit it, and the study goes on on another machine.
  c.archive = "results/fashion_mnist/runs"
  c.results = "RESULTS.md"
  c.figures = "results/fashion_mnist"
  return c
