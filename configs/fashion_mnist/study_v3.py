"""Study v3 on Fashion-MNIST: the paper's protocol, every method tuned alike on a validation split, five seeds.

    python -m simdis_jax.study --config configs/fashion_mnist/study_v3.py --workdir workdirs/v3

The presets are configs/fashion_mnist/v3.py's (`<base>_lr<m>_e<N>`). Everything below was fixed and
committed before the first run it governs; RESULTS.md ("Study v3") holds the plan's arithmetic.

Splits. Pretraining, the kNN monitor and every choice use the fixed 50k/10k split of the training images
(`data.holdout=validation`, docs/input.md): numbers on the 10k held-out images are VALIDATION numbers. The
test set is read once per chosen run, after its pretraining, by the study (config.test_runs: kNN of the
student and of an online teacher, and the fast linear evaluation, DeepMind's protocol, trained on the 50k):
those are TEST numbers, and only they enter the final table. Raw-pixel references on both splits come from
`python -m simdis_jax.evaluation.raw_pixels --holdout <validation|test>`
(results/fashion_mnist_v3/references/).

Phase 1, the sweep (one seed, seed 0, 5 epochs). Every method runs its recipe's learning rate times 0.3, 1
and 3 (a 10x span): the teacher (BYOL, ResNet-10 w16), the student alone (BYOL, ResNet-10 w8),
SimDis-Off-7v, SimDis-On-7v, SEED, MoCo-v2 and the supervised student (torchvision's recipe). The choice is
the multiplier with the highest validation kNN top-1 at the end of the run; where it lies at an edge of the
grid, the next point out (0.1 or 9) runs too and the choice is made again among the four. Offline students
(SimDis-Off-7v, SEED) are swept with the chosen 5-epoch teacher. The two-view SimDis variants take their
seven-view counterpart's choice (the same method and optimizer). Temperatures and momenta stay at their
recipes' values unless the sweep's curves show a method failing to learn (then it is said and probed).

Phase 2, the paper's protocol. For each schedule N in (5, 10) epochs the offline teacher is trained for N
epochs at its chosen rate (seed 0) and the offline students of that schedule distil from it; the online
runs train their teacher for the same N epochs. The sweep's seed-0 runs at the chosen rates are the 5-epoch
schedule's seed 0.

Primary metric: the student's kNN top-1 (k = 20) on the TEST set, at 10 epochs.
Central comparison (five seeds, 0-4, at 10 epochs): the student alone, SimDis-Off-7v, SimDis-On-7v, SEED.
Three seeds (0-2): MoCo-v2, supervised, SimDis-Off/On with two views at 10 epochs; the 5-epoch schedule's
student alone, SimDis-Off-7v, SimDis-On-7v, SEED.
The family of comparisons (FAMILY below, the primary metric, paired over the seeds both arms ran: the mean
difference with its 95% t-interval, the per-seed signs, the paired t-test's p and its Holm-adjusted p over
the whole family):
  1. claim 1, offline:  SimDis-Off-7v - the student alone
  2. claim 1, online:   SimDis-On-7v - the student alone
  3. claim 2:           SimDis-Off-7v - SimDis-On-7v
  4. claim 3:           SimDis-On-7v - SimDis-On-2v (seven views help the online student)
  5. Figure 3:          SimDis-Off-7v - SEED
  6. Figure 3:          SEED - the student alone
  7. Figure 3:          the student alone - MoCo-v2
  8. Figure 3:          supervised - SimDis-Off-7v
Secondary (reported, not in the family): the same differences on linear (fast) top-1 and at 5 epochs;
Table 2 is not rerun in v3 (the long study's single-view rows span 0.22 kNN points).
Cost: every run's training FLOPs (steps x the step's measured FLOPs), with the offline teacher's own run
counted in each offline arm (Figure 1 against cost, and against epochs).
"""

from simdis_jax import config_files

SWEEP_EPOCHS = 5
SWEEP = ("byol_teacher", "byol_student", "moco_v2", "supervised_standard", "simdis_on_7v", "simdis_off_7v", "seed")
OFFLINE = ("simdis_off_7v", "seed", "simdis_off_2v")
FAMILY = (
  ("byol_student", "simdis_off_7v", "claim 1, offline"),
  ("byol_student", "simdis_on_7v", "claim 1, online"),
  ("simdis_on_7v", "simdis_off_7v", "claim 2"),
  ("simdis_on_2v", "simdis_on_7v", "claim 3"),
  ("seed", "simdis_off_7v", "Fig. 3: SimDis vs SEED"),
  ("byol_student", "seed", "Fig. 3: SEED vs BYOL"),
  ("moco_v2", "byol_student", "Fig. 3: BYOL vs MoCo-v2"),
  ("simdis_off_7v", "supervised_standard", "Fig. 3: supervised vs SimDis"),
)
# The sweep's choices: base -> multiplier, written here (with the sweep table in RESULTS.md) once a method's
# sweep has finished. Phase 2's runs are listed only for chosen methods.
CHOSEN = {
  "byol_teacher": "1",  # validation kNN at x0.3 / x1 / x3: 85.17 / 86.53 / 86.20 (interior: no x9 run)
  "byol_student": "1",  # validation kNN at x0.3 / x1 / x3: 82.54 / 84.42 / 84.10 (interior: no x9 run)
  "moco_v2": "3",  # validation kNN at x0.3 / x1 / x3 / x9: 81.12 / 82.93 / 83.43 / 83.09 (x9 run: x3 was the edge)
  "supervised_standard": "3",  # validation kNN at x0.3 / x1 / x3 / x9: 86.57 / 89.02 / 89.64 / 89.55 (x9: the edge)
}

# Methods whose best grid point lies at an edge of the grid: the next point out, added as its sweep ends.
EDGE = {
  "moco_v2": "9",  # validation kNN at x0.3 / x1 / x3: 81.12 / 82.93 / 83.43 (best at the upper edge)
  "supervised_standard": "9",  # validation kNN at x0.3 / x1 / x3: 86.57 / 89.02 / 89.64 (best at the upper edge)
}


def sweep_runs(base: str, multipliers=("0.3", "1", "3")):
  """The sweep's entries of one method: '<base>_lr<m>_e5:0' for each multiplier."""
  return tuple(f"{base}_lr{m}_e{SWEEP_EPOCHS}:0" for m in multipliers)


def get_config():
  presets = config_files.sibling(__file__, "v3.py")
  c = config_files.sibling(__file__, "study.py").get_config()  # labels and texts shared with the 3-epoch study
  c.presets = "configs/fashion_mnist/v3.py"
  c.labels["byol_teacher"] = "BYOL teacher (R10 w16)"
  c.name = "v3"
  c.report_kind = "v3"
  c.archive = "results/fashion_mnist_v3/runs"
  c.results = "RESULTS.md"
  c.figures = "results/fashion_mnist_v3"
  c.references_dir = "results/fashion_mnist_v3/references"
  c.linear_after_pretraining = False  # the chosen runs' test evaluation replaces it
  c.fast_linear = ""
  c.teacher_run = ""
  c.checkpoint_presets = ("byol_teacher",)  # every teacher candidate keeps its final checkpoint
  c.run_env = (("moco_v2", "XLA_FLAGS", f"--xla_force_host_platform_device_count={presets.MOCO_DEVICES}"),)
  runs = ["untrained_student:0"]
  for base in SWEEP:
    if base in OFFLINE and "byol_teacher" not in CHOSEN:
      continue  # swept with the chosen 5-epoch teacher
    runs += sweep_runs(base) + (sweep_runs(base, (EDGE[base],)) if base in EDGE else ())
  c.runs = tuple(runs)
  c.teachers = ()
  if "byol_teacher" in CHOSEN:
    teacher = f"byol_teacher_lr{CHOSEN['byol_teacher']}_e{SWEEP_EPOCHS}:0"
    c.teachers = tuple((p.split(":")[0], teacher) for p in c.runs if p.startswith(OFFLINE))
  c.test_runs = ("untrained_student:0",)
  c.sweep = SWEEP
  c.sweep_epochs = SWEEP_EPOCHS
  c.family = FAMILY
  c.chosen = dict(CHOSEN)
  return c
