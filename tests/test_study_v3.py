"""Study v3: the presets, the study's plan (validation split, per-schedule teachers, test evaluations), its
statistics."""

import math
import os

import pytest

from simdis_jax import config_files, configuration
from simdis_jax.tools.study import plan, significance, v3_figures, v3_report

STUDY = "configs/fashion_mnist/study_v3.py"


def test_holm_adjusts_a_family_step_down_and_skips_missing_values():
  adjusted = significance.holm([0.01, 0.04, 0.03, math.nan])
  # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the running 0.06
  assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
  assert significance.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_paired_interval_by_hand():
  a, b = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 4.0, 2: 3.5, 3: 9.0}  # seed 3 only in b: left out
  st = significance.paired_interval(a, b)
  # differences 1, 2, 0.5: mean 7/6, sd sqrt(7/12); t_{0.975, 2} = 4.302653; p (df 2) = 1 - t / sqrt(t^2 + 2)
  sd = math.sqrt(7 / 12)
  half = 4.302653 * sd / math.sqrt(3)
  t = (7 / 6) / (sd / math.sqrt(3))
  assert (st["n"], st["positive"], st["negative"]) == (3, 3, 0)
  assert st["mean"] == pytest.approx(7 / 6)
  assert (st["low"], st["high"]) == pytest.approx((7 / 6 - half, 7 / 6 + half), rel=1e-6)
  assert st["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
  one = significance.paired_interval({0: 1.0}, {0: 3.0})
  assert one["mean"] == 2.0 and math.isnan(one["low"]) and math.isnan(one["p"])


@pytest.mark.parametrize(
  "name, method, lr, holdout",
  [
    ("byol_teacher_lr0.3_e5", "byol", 1.8, "validation"),
    ("simdis_off_7v_lr3_e10", "simdis_off", 18.0, "validation"),
    ("seed_lr1_e5", "seed", 0.03, "validation"),
    ("moco_v2_lr9_e10", "moco_v2", 0.27, "validation"),
  ],
)
def test_v3_presets_are_valid_and_scale_the_recipe_rate(name, method, lr, holdout):
  c = configuration.validate(config_files.load_config(f"configs/fashion_mnist/v3.py:{name}"))
  assert (c.method, c.data.holdout, c.final_eval.linear_networks) == (method, holdout, ())
  assert c.optim.base_lr == pytest.approx(lr)
  epochs = int(name.rsplit("_e", 1)[1])
  assert c.train.epochs == epochs and c.train.knn_every_steps == 390 * (1 if epochs == 5 else 2)
  if name.startswith("byol_teacher"):
    assert (c.model.student.depth, c.model.student.width) == (10, 16)
  if method in ("simdis_off", "seed"):
    assert c.knn.networks == ("student",)  # the frozen teacher is not re-measured
  if method == "seed":  # the ramp is flat at the scaled rate: it never lowers the rate during the warm-up
    assert c.optim.warmup_init_lr == pytest.approx(c.optim.base_lr * c.train.batch_size / 256)
  if method in ("byol", "simdis_off"):
    assert (c.optim.warmup_epochs, c.optim.warmup_init_lr) == (1.0, 0.0)


@pytest.mark.parametrize("bad", ["simdis_off_7v_lr2_e5", "simdis_off_7v_lr1_e20", "simdis_off_7v_e5"])
def test_v3_presets_refuse_what_the_study_does_not_define(bad):
  with pytest.raises(ValueError, match=bad):
    config_files.load_config(f"configs/fashion_mnist/v3.py:{bad}")


def test_the_study_plans_the_sweep_first_moco_on_eight_devices_and_tests_only_chosen_runs(tmp_path):
  study = config_files.load_config(STUDY)
  runs = plan.parse_runs(study.runs)
  assert runs[0] == ("untrained_student", 0) and runs[1:4] == [(f"byol_teacher_lr{m}_e5", 0) for m in ("0.3", "1", "3")]
  assert all(seed == 0 and preset.endswith("_e5") for preset, seed in runs[1:])
  assert plan.run_env(study, "moco_v2_lr1_e5") == {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert plan.run_env(study, "byol_student_lr1_e5") == {}
  # every teacher candidate keeps its checkpoint, whichever is chosen
  assert sorted(r for r in plan.teacher_runs(study) if r[0].startswith("byol_teacher")) == sorted(runs[1:4])
  # the offline students' sweep runs distil from the chosen teacher (x1: validation kNN 86.53 of 85.17 / 86.20)
  chosen = {"byol_teacher": "1", "byol_student": "1", "moco_v2": "3", "supervised_standard": "3"}
  assert study.chosen.to_dict() == chosen
  # MoCo-v2's best grid point is its edge (x3: 83.43 of 81.12 / 82.93): x9 runs right after its grid
  moco = [p for p, _ in runs if p.startswith("moco_v2_")]
  assert moco == [f"moco_v2_lr{m}_e5" for m in ("0.3", "1", "3", "9")]
  # so is the supervised student's (x3: 89.64 of 86.57 / 89.02)
  supervised = [p for p, _ in runs if p.startswith("supervised_standard_")]
  assert supervised == [f"supervised_standard_lr{m}_e5" for m in ("0.3", "1", "3", "9")]
  offline = [p for p, _ in runs if p.startswith(("simdis_off_7v_", "seed_"))]
  assert offline == [f"{b}_lr{m}_e5" for b in ("simdis_off_7v", "seed") for m in ("0.3", "1", "3")]
  assert {plan.teacher_run(study, p) for p in offline} == {("byol_teacher_lr1_e5", 0)}
  sweep_dir = str(tmp_path / "byol_student_lr1_e5" / "seed0")
  os.makedirs(sweep_dir)
  open(os.path.join(sweep_dir, "summary.json"), "w").write("{}")
  assert plan.is_done(study, sweep_dir)  # a sweep run needs no test evaluation
  untrained = str(tmp_path / "untrained_student" / "seed0")
  os.makedirs(untrained)
  open(os.path.join(untrained, "summary.json"), "w").write("{}")
  assert not plan.is_done(study, untrained)  # a chosen run is done after its test evaluation
  todo = plan.commands(study, str(tmp_path), "untrained_student", 0)
  assert len(todo) == 2 and "--holdout=test" in todo[0] and "--config.data.holdout=test" in todo[1]


def test_the_teacher_of_an_offline_preset_is_its_schedules_own():
  study = config_files.load_config(STUDY)
  study.teachers = (("simdis_off_7v_lr1_e10", "byol_teacher_lr1_e10:0"), ("seed_lr1_e5", "byol_teacher_lr3_e5:0"))
  assert plan.teacher_run(study, "simdis_off_7v_lr1_e10") == ("byol_teacher_lr1_e10", 0)
  assert plan.teacher_run(study, "seed_lr1_e5") == ("byol_teacher_lr3_e5", 0)
  cmd = plan.command(study, "w", "seed_lr1_e5", 2)
  assert "--config.teacher.workdir=" + os.path.join("w", "byol_teacher_lr3_e5", "seed0") in cmd
  with pytest.raises(ValueError, match="no offline teacher"):
    plan.teacher_run(study, "simdis_off_7v_lr3_e5")


def test_the_v3_report_reads_the_sweep_and_the_family_from_records(tmp_path):
  study = config_files.load_config(STUDY)
  study.references_dir = str(tmp_path / "refs")
  study.chosen = {"byol_student": "1", "simdis_off_7v": "3"}
  study.runs = (
    "byol_student_lr1_e5:0",
    "byol_student_lr3_e5:0",
    "byol_student_lr1_e10:0,1,2",
    "simdis_off_7v_lr3_e10:0,1,2",
  )
  for preset, seed, val, test in [
    ("byol_student_lr1_e5", 0, 85.5, None),
    ("byol_student_lr3_e5", 0, 84.25, None),
    ("byol_student_lr1_e10", 0, 86.0, 85.0),
    ("byol_student_lr1_e10", 1, 86.0, 86.0),
    ("byol_student_lr1_e10", 2, 86.0, 85.5),
    ("simdis_off_7v_lr3_e10", 0, 88, 86.0),
    ("simdis_off_7v_lr3_e10", 1, 88, 88.0),
    ("simdis_off_7v_lr3_e10", 2, 88, 87.0),
  ]:
    d = tmp_path / "w" / preset / f"seed{seed}"
    (d / "test").mkdir(parents=True)
    (d / "summary.json").write_text(f'{{"knn_top1/student": {val}, "train_time_s": 600, "steps": 1950}}')
    if test is not None:
      (d / "test" / "knn_student.json").write_text(f'{{"knn_top1/k20": {test}}}')
  text = v3_report.v3_markdown(study, str(tmp_path / "w"))
  assert "| BYOL student alone | — | — | **85.50** | 84.25 | — | ×1 | 10.0 |" in text.replace(
    study.labels.get("byol_student", "byol_student"), "BYOL student alone"
  )
  # claim 1 offline: differences 1, 2, 1.5 over three seeds
  row = next(line for line in text.splitlines() if line.startswith("| claim 1, offline"))
  assert "| 3 | 1.50 |" in row and "| 3/0 |" in row


def _fake_runs(root, rows):
  """Writes run records: (preset, seed, val kNN, test kNN, test linear, step GFLOP, steps)."""
  for preset, seed, val, test, linear, gflop, steps in rows:
    d = root / preset / f"seed{seed}"
    (d / "test" / "linear_fast").mkdir(parents=True)
    (d / "summary.json").write_text(
      f'{{"knn_top1/student": {val}, "train_time_s": 60, "steps": {steps}, "step_flops": {gflop * 1e9}}}'
    )
    (d / "test" / "knn_student.json").write_text(f'{{"knn_top1/k20": {test}}}')
    (d / "test" / "linear_fast" / "linear_eval.json").write_text(f'{{"top1": {linear}}}')


def test_figure1_counts_the_offline_teachers_run_and_draws_intervals(tmp_path):
  study = config_files.load_config(STUDY)
  study.chosen = {"byol_teacher": "1", "simdis_off_7v": "3", "byol_student": "1"}
  _fake_runs(
    tmp_path,
    [
      ("byol_teacher_lr1_e10", 0, 88, 87.5, 85, 24.0, 3900),
      ("simdis_off_7v_lr3_e10", 0, 88, 87.0, 84, 20.0, 3900),
      ("simdis_off_7v_lr3_e10", 1, 88, 88.0, 85, 20.0, 3900),
      ("byol_student_lr1_e10", 0, 86, 86.0, 82, 6.0, 3900),
      ("byol_student_lr1_e5", 0, 85, 85.0, 81, 6.0, 1950),
    ],
  )
  study.runs = (
    "byol_teacher_lr1_e10:0",
    "simdis_off_7v_lr3_e10:0,1",
    "byol_student_lr1_e10:0",
    "byol_student_lr1_e5:0",
  )
  recs = v3_report.records(study, str(tmp_path))
  off = v3_figures.arm_points(study, recs, "simdis_off_7v")
  # the student's 20 GFLOP x 3900 steps plus the teacher's 24 x 3900: 0.078 + 0.0936 PFLOP
  assert len(off) == 1 and off[0]["pflop"] == pytest.approx((20 + 24) * 3900 / 1e6)
  assert off[0]["mean"] == pytest.approx(87.5) and off[0]["n"] == 2
  assert off[0]["high"] - off[0]["mean"] == pytest.approx(12.706205 * math.sqrt(0.5) / math.sqrt(2), rel=1e-6)
  alone = v3_figures.arm_points(study, recs, "byol_student")
  assert [(p["epochs"], p["pflop"], p["n"]) for p in alone] == [
    (5, pytest.approx(6 * 1950 / 1e6), 1),
    (10, pytest.approx(6 * 3900 / 1e6), 1),
  ]
  assert math.isnan(alone[0]["low"])  # one seed: no interval, drawn hollow
  path = v3_figures.write_figure1(
    study, recs, {"knn": 85.29, "untrained": 77.0}, str(tmp_path / "f1.png"), ("simdis_off_7v", "byol_student")
  )
  path3 = v3_figures.write_figure3(
    study, recs, {"knn": 85.29, "linear": 83.0}, str(tmp_path / "f3.png"), ("byol_student", "simdis_off_7v")
  )
  assert os.path.getsize(path) > 10_000 and os.path.getsize(path3) > 10_000
  assert v3_figures.write_figure1(study, recs, {}, str(tmp_path / "none.png"), ("moco_v2",)) is None
