"""The long-schedule Fashion-MNIST study: the paper's claims where self-supervision works.

    python -m simdis_jax.study --config configs/fashion_mnist/study_long.py --workdir workdirs/fmnist_long

The presets are configs/fashion_mnist/long.py's (`<preset>_e<epochs>`: the 3-epoch study's preset on a
5-, 10- or 20-epoch schedule, teacher ResNet-10 w16 trained once for 20 epochs). Order: the offline
teacher, the student alone at 10 epochs (it decides the regime), the untrained and the pilot's 20-epoch
student, then the central comparison at 10 epochs (student alone, SimDis-Off-7v, SimDis-On-7v, SEED) seed
by seed, then Figure 3's other systems at 10 epochs, then Figure 1's 5-epoch schedule, then Table 2's
other single teacher views at 10 epochs (offline, one seed). The 20-epoch schedule has the student alone
(the pilot) and the teacher only: SimDis-Off-7v and SimDis-On-7v at 20 epochs (~2.3 h at the runs' quiet
step costs) did not fit the 12-hour budget beside the rest (RESULTS.md, "Plan and compute").
Why this regime: the pilot (results/fashion_mnist/pilot/README.md); why 10 epochs: the budget
(RESULTS.md, "the long study's plan": three seeds of SimDis-On-7v at 20 epochs alone cost ~6.8 h).
"""

from simdis_jax import config_files

LONGEST = 10  # the central comparison's and Figure 3's schedule (epochs)
CENTRAL = tuple(f"{p}_e{LONGEST}" for p in ("byol_student", "simdis_off_7v", "simdis_on_7v", "seed"))


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
    "byol_teacher_e20:0",
    CENTRAL[0] + ":0",
    "untrained_student:0",
    "byol_student_e20:0",
    *(f"{p}:0" for p in CENTRAL[1:]),
    *(f"{p}:1" for p in CENTRAL),
    *(f"{p}:2" for p in CENTRAL),
    # Figure 3's other systems, one seed
    *(f"{p}_e{LONGEST}:0" for p in ("moco_v2", "supervised_standard", "simdis_off_2v", "simdis_on_2v")),
    # Figure 1's shorter schedule, one seed
    "byol_student_e5:0",
    "simdis_off_7v_e5:0",
    "simdis_on_7v_e5:0",
    "simdis_off_2v_e5:0",
    "simdis_on_2v_e5:0",
    # Table 2's other single teacher views (T-v, T-v', T̂-v; T̂-v' is simdis_off_2v) offline, one seed
    *(f"{p}_e{LONGEST}:0" for p in ("off_t_sv", "off_t_dv", "off_tema_sv")),
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
  e = LONGEST
  c.comparisons = tuple((f"{a}_e{e}", f"{b}_e{e}", claim) for a, b, claim in c.comparisons) + (
    (f"seed_e{e}", f"simdis_off_7v_e{e}", "Fig. 3: SimDis vs SEED"),
    (f"byol_student_e{e}", f"seed_e{e}", "Fig. 3: SEED vs BYOL"),
    (f"moco_v2_e{e}", f"byol_student_e{e}", "Fig. 3: BYOL vs MoCo-v2"),
    ("byol_student_e5", "simdis_off_7v_e5", "claim 1, 5 epochs"),
    ("simdis_on_7v_e5", "simdis_off_7v_e5", "claim 2, 5 epochs"),
    # Table 2's view ranking offline: the other view's target against the same view's, for T and T̂
    (f"off_t_sv_e{e}", f"off_t_dv_e{e}", "Table 2: T-v' vs T-v"),
    (f"off_tema_sv_e{e}", f"simdis_off_2v_e{e}", "Table 2: T̂-v' vs T̂-v"),
  )
  c.online_teacher_preset = f"simdis_on_7v_e{e}"
  c.figure_colors = {f"supervised_e{e}": "C2", f"supervised_standard_e{e}": "C2"}
  c.figure_title = (
    "Fashion-MNIST study, long schedules: student ResNet-10 w8, teacher ResNet-10 w16 "
    "(20 epochs; bars: mean ± std; dots: seeds)"
  )
  c.untrained_preset = "untrained_student"
  # The paper's Figures 1 and 3 on this data: top-1 vs schedule length, one line per method
  # (simdis_jax/tools/study/curves.py); the raw-pixel references and the untrained student as horizontal lines.
  c.epoch_figures = (
    {
      "file": "figure1_top1_vs_epochs.png",
      "with_teacher": True,
      "methods": ("simdis_off_7v", "simdis_on_7v", "simdis_off_2v", "simdis_on_2v", "byol_student"),
      "title": "Figure 1 on Fashion-MNIST: SimDis-Off/On (2 and 7 views) and the student alone vs schedule length "
      "(student R10 w8; teacher R10 w16, 20 epochs; dashed: the teacher's kNN during its run)",
    },
    {
      "file": "figure3_top1_vs_epochs.png",
      "with_teacher": False,
      "methods": (
        "moco_v2",
        "byol_student",
        "seed",
        "simdis_off_7v",
        "simdis_on_7v",
        "simdis_off_2v",
        "simdis_on_2v",
        "supervised_standard",
      ),
      "title": "Figure 3 on Fashion-MNIST: MoCo-v2, BYOL, SEED, SimDis and supervised ResNet-10 w8 students "
      "vs schedule length",
    },
  )
  return c
