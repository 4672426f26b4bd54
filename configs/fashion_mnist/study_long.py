"""The long-schedule Fashion-MNIST study (issue #18): the paper's claims where self-supervision works.

    python -m simdis_jax.study --config configs/fashion_mnist/study_long.py --workdir workdirs/fmnist_long

The presets are configs/fashion_mnist/long.py's (`<preset>_e<epochs>`: the 3-epoch study's preset on a
5-, 10- or 20-epoch schedule, teacher ResNet-10 w16 trained once for 20 epochs). Order: the offline
teacher, then the central comparison at 20 epochs (student alone, SimDis-Off-7v, SimDis-On-7v, SEED)
seed by seed, then Figure 3's other systems at 20 epochs, then Figure 1's shorter schedules.
Why this regime: the pilot (results/fashion_mnist/pilot/README.md).
"""

from simdis_jax import config_files

CENTRAL = ("byol_student_e20", "simdis_off_7v_e20", "simdis_on_7v_e20", "seed_e20")


def _suffixed(table, epochs=(5, 10, 20)):
  """{preset: x} of the 3-epoch study -> {preset_e<N>: x} for every schedule (untrained_student kept bare)."""
  out = {}
  for preset, value in table.items():
    if preset == "untrained_student":
      out[preset] = value
    else:
      out.update({f"{preset}_e{n}": value for n in epochs})
  return out


def get_config():
  c = config_files.sibling(__file__, "study.py").get_config()  # the 3-epoch study's report data
  c.presets = "configs/fashion_mnist/long.py"
  c.runs = (
      "byol_teacher_e20:0", "untrained_student:0",
      *(f"{p}:0" for p in CENTRAL),
      *(f"{p}:1" for p in CENTRAL),
      *(f"{p}:2" for p in CENTRAL),
      # Figure 3's other systems, one seed
      "moco_v2_e20:0", "supervised_standard_e20:0", "simdis_off_2v_e20:0", "simdis_on_2v_e20:0",
      # Figure 1's shorter schedule, one seed
      "byol_student_e5:0", "simdis_off_7v_e5:0", "simdis_on_7v_e5:0", "simdis_off_2v_e5:0", "simdis_on_2v_e5:0",
  )
  c.teacher_run = "byol_teacher_e20:0"
  c.name = "long"  # its own markers in RESULTS.md, beside the 3-epoch study's section
  c.archive = "results/fashion_mnist_long/runs"
  c.results = "RESULTS.md"
  c.figures = "results/fashion_mnist_long"
  c.method_labels = dict(c.labels)  # per method, for the top-1-vs-epochs figures
  c.method_labels["byol_student"] = "BYOL student alone"
  labels = _suffixed(c.labels)
  for preset, label in list(labels.items()):
    if preset != "untrained_student":
      labels[preset] = f"{label}, {preset.rsplit('_e', 1)[1]} ep"
  labels["byol_teacher_e20"] = "BYOL teacher (R10 w16), 20 ep"
  c.labels = labels
  c.paper = _suffixed(c.paper)
  c.central = CENTRAL[:3]
  c.comparisons = tuple((f"{a}_e20", f"{b}_e20", claim) for a, b, claim in c.comparisons) + (
      ("seed_e20", "simdis_off_7v_e20", "Fig. 3: SimDis vs SEED"),
      ("byol_student_e20", "seed_e20", "Fig. 3: SEED vs BYOL"),
      ("moco_v2_e20", "byol_student_e20", "Fig. 3: BYOL vs MoCo-v2"),
      ("byol_student_e5", "simdis_off_7v_e5", "claim 1, 5 epochs"),
      ("simdis_on_7v_e5", "simdis_off_7v_e5", "claim 2, 5 epochs"),
  )
  c.online_teacher_preset = "simdis_on_7v_e20"
  c.figure_colors = {"supervised_e20": "C2", "supervised_standard_e20": "C2"}
  c.figure_title = ("Fashion-MNIST study, long schedules: student ResNet-10 w8, teacher ResNet-10 w16 "
                    "(20 epochs; bars: mean ± std; dots: seeds)")
  c.untrained_preset = "untrained_student"
  # The paper's Figures 1 and 3 on this data: top-1 vs schedule length, one line per method
  # (simdis_jax/tools/study/curves.py); the raw-pixel references and the untrained student as horizontal lines.
  c.epoch_figures = (
      {"file": "figure1_top1_vs_epochs.png", "with_teacher": True,
       "methods": ("simdis_off_7v", "simdis_on_7v", "simdis_off_2v", "simdis_on_2v", "byol_student"),
       "title": "Figure 1 on Fashion-MNIST: SimDis-Off/On (2 and 7 views) and the student alone vs schedule length "
                "(student R10 w8; teacher R10 w16, 20 epochs; dashed: the teacher's kNN during its run)"},
      {"file": "figure3_top1_vs_epochs.png", "with_teacher": False,
       "methods": ("moco_v2", "byol_student", "seed", "simdis_off_7v", "simdis_on_7v", "simdis_off_2v",
                   "simdis_on_2v", "supervised_standard"),
       "title": "Figure 3 on Fashion-MNIST: MoCo-v2, BYOL, SEED, SimDis and supervised ResNet-10 w8 students "
                "vs schedule length"},
  )
  return c
