"""The Fashion-MNIST study (3 epochs): which presets, which seeds, in which order.

    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study

Each entry is "<preset>:<seeds>"; runs go in this order, so that an interrupted study has the
central comparison (student alone vs SimDis-Off-7v vs SimDis-On-7v, three seeds) first. The
offline teacher (byol_teacher, seed 0) is trained once and shared by every offline student.
The report's data (the paper's figures, labels, comparisons, references, texts) is here too,
so a new study is a new config file (simdis_jax/tools/study/ reads these fields).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.presets = "configs/fashion_mnist/presets.py"
  c.runs = (
    "byol_teacher:0",
    "untrained_student:0",
    "byol_student:0",
    "simdis_off_7v:0",
    "simdis_on_7v:0",
    "byol_student:1",
    "simdis_off_7v:1",
    "simdis_on_7v:1",
    "byol_student:2",
    "simdis_off_7v:2",
    "simdis_on_7v:2",
    "supervised:0,1,2",
    "simdis_off_2v:0",
    "simdis_on_2v:0",
    "off_t_sv:0",
    "off_t_dv:0",
    "off_tema_sv:0",
    # Figure 3's other systems (moco_v2, seed, supervised_standard) ran in the long study only
    # (configs/fashion_mnist/study_long.py): at 3 epochs every self-supervised student sits at raw pixels.
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

  # --- The report ---
  # Orientation only: the paper's ImageNet linear top-1 (ResNet-50 teacher -> ResNet-18 student),
  # preset: (figure, where it is). Table 1: standard setting (LARS, SyncBN), 100 epochs.
  # Table 2: no LARS/SyncBN, 100 epochs.
  c.paper = {
    "byol_teacher": ("65.83", "Table 2 / Sec. 4.3: BYOL ResNet-50 teacher"),
    "byol_student": ("55.96", "Table 2: ResNet-18 alone"),
    "simdis_off_2v": ("61.76 / 62.66", "Table 1 SimDis-Off / Table 2 offline T̂-v'"),
    "simdis_off_7v": ("63.14", "Table 2 offline, 7 views"),
    "simdis_on_2v": ("58.08 / 58.84", "Table 1 SimDis-On / Table 2 online T̂-v'"),
    "simdis_on_7v": ("60.65 / 63.52", "Table 1 SimDis-On-7v / Table 2 online, 7 views"),
    "off_t_sv": ("59.67", "Table 2 offline T-v"),
    "off_t_dv": ("62.08", "Table 2 offline T-v'"),
    "off_tema_sv": ("59.72", "Table 2 offline T̂-v"),
    "supervised": ("—", "Fig. 3 upper bound (value not in the text)"),
    "untrained_student": ("—", ""),
    "moco_v2": ("—", "Fig. 3 MoCo-v2 ResNet-18 (read off the plot only)"),
    "seed": ("—", "Fig. 3 SEED ResNet-18 <- ResNet-50 (read off the plot only)"),
    "supervised_standard": ("69.76", "torchvision ResNet-18 reference (90 epochs)"),
  }
  c.labels = {
    "byol_teacher": "BYOL teacher (R18 w16)",
    "byol_student": "BYOL student alone",
    "simdis_off_2v": "SimDis-Off (Ŝ-v', T̂-v')",
    "simdis_off_7v": "SimDis-Off-7v",
    "simdis_on_2v": "SimDis-On (Ŝ-v', T̂-v')",
    "simdis_on_7v": "SimDis-On-7v",
    "off_t_sv": "Off, Ŝ-v' + T-v",
    "off_t_dv": "Off, Ŝ-v' + T-v'",
    "off_tema_sv": "Off, Ŝ-v' + T̂-v",
    "supervised": "Supervised student (cross-entropy)",
    "untrained_student": "Untrained student (reference)",
    "moco_v2": "MoCo-v2 student",
    "seed": "SEED student (from the BYOL teacher)",
    "supervised_standard": "Supervised student (torchvision recipe)",
  }
  # The central presets (the first is the baseline of the comparisons that name no other); blue in the figure.
  c.central = ("byol_student", "simdis_off_7v", "simdis_on_7v")
  c.figure_colors = {"supervised": "C2"}  # other presets than the central ones (default grey)
  # (baseline, run, the claim it tests): the report gives run - baseline for each pair that the study lists.
  c.comparisons = (
    ("byol_student", "simdis_off_7v", "claim 1"),
    ("byol_student", "simdis_on_7v", "claim 1"),
    ("byol_student", "supervised", ""),
    ("byol_student", "simdis_off_2v", "claim 1"),
    ("byol_student", "simdis_on_2v", "claim 1"),
    ("simdis_on_7v", "simdis_off_7v", "claim 2, 7 views"),
    ("simdis_on_2v", "simdis_off_2v", "claim 2, 2 views"),
    ("simdis_on_2v", "simdis_on_7v", "claim 3"),
    ("simdis_off_2v", "simdis_off_7v", "views, offline"),
  )
  # The preset whose online teachers' kNN the report sets beside the offline teacher's (teacher_run).
  c.online_teacher_preset = "simdis_on_7v"
  # Measured on Fashion-MNIST in this project (RESULTS.md), for orientation: (name, top-1, short name in the figure,
  # the figure's panels that draw it: "linear" or "knn").
  c.references_title = "References on this data (measured here)"
  c.references = (
    ("logistic regression on raw pixels (linear)", 84.4, "pixels, logistic", "linear"),
    ("weighted kNN on raw pixels (k=20)", 84.6, "pixels, kNN", "knn"),
    ("linear probe on pooled features of an untrained small conv net", 82.0, "untrained net (reported)", "linear"),
  )
  c.table_note = (
    "Linear (full): DeepMind's protocol, full mode (crop + flip through the frozen encoder), 10 epochs, top-1 on "
    "the 10k test images. Linear (fast): the authors' protocol, 80 epochs on cached features of the whole images "
    "(`configs/fashion_mnist/linear_eval.py:authors,fast`), which converges where 10 full-mode epochs do not. kNN: "
    "weighted, k = 20, T = 0.07, 60k train images as the bank. Mean ± sample std over the seeds listed; one seed "
    "shows no ±. GFLOP/step: XLA's cost analysis of the whole train step (batch 128, both views, every network). "
    "Train min: pretraining wall time per run (mean), including the kNN at the start and the end."
  )
  c.figure_title = (
    "Fashion-MNIST study: student ResNet-10 w8, teacher ResNet-18 w16, 3 epochs (bars: mean ± std; dots: seeds)"
  )
  # The figure's three panels: linear (full), linear (fast), kNN.
  c.figure_panel_titles = ("linear top-1, full, 10 ep (%)", "linear top-1, fast, 80 ep (%)", "kNN top-1 (%)")
  return c
