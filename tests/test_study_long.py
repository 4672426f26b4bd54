"""The long-schedule study: its presets, its plan, and its report beside the 3-epoch study's."""

import json
import os
import sys

import pytest

from simdis_jax import configuration
from simdis_jax.tools.study import curves, plan, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs", "fashion_mnist"))
import long as long_presets  # noqa: E402  pylint: disable=wrong-import-position,import-error
import presets  # noqa: E402  pylint: disable=wrong-import-position,import-error
import study as short_study  # noqa: E402  pylint: disable=wrong-import-position,import-error
import study_long  # noqa: E402  pylint: disable=wrong-import-position,import-error
from test_study import differing_keys, fake_run  # noqa: E402  pylint: disable=wrong-import-position

SCHEDULE_KEYS = {"train.epochs", "train.checkpoint_every_steps", "train.knn_every_steps"}
TEACHER_KEYS = {"model.teacher.depth"}  # ResNet-10 w16 instead of ResNet-18 w16


def test_long_presets_are_the_short_ones_on_a_longer_schedule_with_the_resnet10_teacher():
  for base in presets.PRESETS:
    for epochs in long_presets.EPOCHS:
      name = f"{base}_e{epochs}"
      if base == "byol_teacher" and epochs != 20:
        with pytest.raises(ValueError, match="trained for 20 epochs: use byol_teacher_e20"):
          long_presets.get_config(name)
        continue
      if base == "untrained_student":
        continue
      c = configuration.validate(long_presets.get_config(name))
      short = presets.get_config(base)
      expected = SCHEDULE_KEYS | TEACHER_KEYS
      if short.optim.name == "lars" or base == "seed":
        expected |= {"optim.warmup_epochs"}
      if base == "supervised_standard":
        expected |= {"optim.step_epochs"}
      if base == "byol_teacher":
        expected |= {"model.student.depth"}
      if short.teacher.get("workdir"):
        expected |= {"teacher.workdir"}
      assert differing_keys(short, c) == expected, name
      assert c.train.epochs == epochs and c.model.teacher.depth == 10 and c.model.teacher.width == 16
      assert c.train.knn_every_steps == (468 if epochs == 5 else 936)
      if "optim.warmup_epochs" in expected:
        assert c.optim.warmup_epochs == 1.0
  teacher = long_presets.get_config("byol_teacher_e20")
  assert teacher.model.student.to_dict() == teacher.model.teacher.to_dict()
  assert differing_keys(presets.get_config("untrained_student"), long_presets.get_config("untrained_student")) == (
    TEACHER_KEYS
  )
  for bad, message in (
    ("byol_student", "must look like '<preset>_e<epochs>'"),
    ("byol_student_e7", r"\(5, 10, 20\)"),
    ("byol_studnet_e20", "Unknown preset 'byol_studnet'"),
  ):
    with pytest.raises(ValueError, match=message):
      long_presets.get_config(bad)


def test_the_long_study_runs_the_teacher_then_the_central_comparison_on_three_seeds():
  c = study_long.get_config()
  runs = plan.parse_runs(c.runs)
  assert len(runs) == len(set(runs))
  assert study_long.CENTRAL == ("byol_student_e10", "simdis_off_7v_e10", "simdis_on_7v_e10", "seed_e10")
  # The teacher, then the student alone at 10 epochs (it decides whether 10 epochs is the regime), the
  # untrained student and the pilot's 20-epoch student (both cheap), then the rest of the central comparison.
  assert runs[:4] == [
    ("byol_teacher_e20", 0),
    ("byol_student_e10", 0),
    ("untrained_student", 0),
    ("byol_student_e20", 0),
  ]
  central = [runs[1]] + runs[4 : 4 + 3 * len(study_long.CENTRAL) - 1]
  assert central == [(p, s) for s in (0, 1, 2) for p in study_long.CENTRAL]  # seed by seed, first of all
  for preset, _ in runs:
    long_presets.get_config(preset)  # every run is a preset
  # Figure 3's systems at the central schedule (10 epochs), Figure 1's methods at 5 and 10 epochs, then
  # Table 2's other single teacher views at 10 epochs last (no SimDis run at 20 epochs: the budget).
  for method in c.epoch_figures[1]["methods"]:
    assert (f"{method}_e10", 0) in runs
  for method in c.epoch_figures[0]["methods"]:
    assert {e for (p, _) in runs for e in [curves.schedule(p)] if e and e[0] == method} >= {(method, 5), (method, 10)}
  table2 = [(f"{view}_e10", 0) for view in ("off_t_sv", "off_t_dv", "off_tema_sv")]  # T̂-v' is simdis_off_2v
  assert runs[-3:] == table2
  assert len(runs) == 27 and [p for p, _ in runs if p.endswith("_e20")] == ["byol_teacher_e20", "byol_student_e20"]
  assert all(a.endswith("_e10") or a.endswith("_e5") for a, _, _ in c.comparisons), c.comparisons
  cmd = plan.command(c, "w", "seed_e10", 1)
  assert cmd[-1] == f"--config.teacher.workdir={os.path.join('w', 'byol_teacher_e20', 'seed0')}"
  assert (
    plan.command(c, "w", "simdis_on_7v_e10", 1)[-1] == f"--workdir={os.path.join('w', 'simdis_on_7v_e10', 'seed1')}"
  )


def fake_long_run(work, preset, seed, linear, knn, knn_curve=()):
  """A finished run of the long study; knn_curve: [(step, kNN)] logged during it (468 steps per epoch)."""
  fake_run(work, preset, seed, linear, knn)
  d = os.path.join(work, preset, f"seed{seed}")
  epochs = curves.schedule(preset)[1] if curves.schedule(preset) else 0
  with open(os.path.join(d, "summary.json")) as f:
    summary = json.load(f)
  summary.update(epochs=float(epochs), steps=468 * epochs)
  with open(os.path.join(d, "summary.json"), "w") as f:
    json.dump(summary, f)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for step, value in knn_curve:
      f.write(json.dumps({"step": step, "knn_top1/student": value}) + "\n")


def test_epoch_figures_and_two_studies_sharing_one_results_file(tmp_path):
  long = study_long.get_config()
  long.runs = (
    "byol_teacher_e20:0",
    "untrained_student:0",
    "byol_student_e5:0",
    "byol_student_e20:0,1",
    "simdis_off_7v_e20:0",
  )
  work = str(tmp_path / "long")
  fake_long_run(work, "byol_teacher_e20", 0, 85.0, 89.0, [(0, 78.0), (936, 85.0), (9360, 89.0)])
  fake_long_run(work, "untrained_student", 0, 43.0, 77.0)
  fake_long_run(work, "byol_student_e5", 0, 80.0, 85.0)
  fake_long_run(work, "byol_student_e20", 0, 82.0, 87.0)
  fake_long_run(work, "byol_student_e20", 1, 84.0, 88.0)
  fake_long_run(work, "simdis_off_7v_e20", 0, 85.0, 88.5)
  from simdis_jax.tools.study.results import aggregate  # pylint: disable=import-outside-toplevel

  agg = aggregate(long, work)
  assert curves.method_points(agg, "byol_student", "knn_top1") == [
    (5, 85.0, 0.0, [85.0]),
    (20, 87.5, pytest.approx(0.7071, abs=1e-4), [87.0, 88.0]),
  ]
  assert curves.method_points(agg, "byol_student", "fast_linear_top1")[1][1] == 88.0  # fake_run: linear + 5
  assert curves.method_points(agg, "moco_v2", "knn_top1") == []
  assert curves.monitored_knn(os.path.join(work, "byol_teacher_e20", "seed0")) == [
    (0.0, 78.0),
    (2.0, 85.0),
    (20.0, 89.0),
  ]
  assert curves.baselines(long, agg, "knn_top1") == [(84.6, "pixels, kNN"), (77.0, "untrained student")]
  assert curves.baselines(long, agg, "linear_top1")[-1] == (43.0, "untrained student")
  # The untrained student is a line when within 10 points under the range (kNN 77 here), named at the edge below.
  assert curves.y_limits([85.0, 88.5], curves.baselines(long, agg, "knn_top1")) == (
    76.0,
    90.0,
    [(84.6, "pixels, kNN"), (77.0, "untrained student")],
  )
  assert curves.y_limits([80.0, 85.0], [(84.4, "pixels, logistic"), (43.0, "untrained student")]) == (
    78.0,
    86.5,
    [(84.4, "pixels, logistic")],
  )
  # The 3-epoch study's section and the long study's live in one file; each rewrite keeps the other's.
  short = short_study.get_config()
  short.runs = ("byol_student:0",)
  short_work = str(tmp_path / "short")
  fake_run(short_work, "byol_student", 0, 75.0, 82.0)
  results = tmp_path / "RESULTS.md"
  results.write_text("# Results\n\nintro\n")
  report.write_study_report(long, work, str(results), str(tmp_path / "fig_long"))
  report.write_study_report(short, short_work, str(results), str(tmp_path / "fig_short"))
  report.write_study_report(long, work, str(results), str(tmp_path / "fig_long"))  # rewritten in place
  text = results.read_text()
  long_begin, long_end = report.markers(long)
  assert text.count(long_begin) == 1 and text.count(report.BEGIN) == 1 and long_begin != report.BEGIN
  assert text.index(long_begin) < text.index(long_end) < text.index(report.BEGIN)
  assert "| BYOL student alone, 20 ep | 0,1 | 83.00 ± 1.41 |" in text
  assert "| BYOL student alone | 0 | 75.00 |" in text
  for name in ("study_top1.png", "figure1_top1_vs_epochs.png", "figure3_top1_vs_epochs.png"):
    assert (tmp_path / "fig_long" / name).read_bytes()[:4] == b"\x89PNG"
    assert f"![{name}](fig_long/{name})" in text
  assert not (tmp_path / "fig_short" / "figure1_top1_vs_epochs.png").exists()


def _archived(preset, seed, name="summary.json"):
  path = os.path.join("results/fashion_mnist_long/runs", preset, f"seed{seed}", name)
  with open(path) as f:
    return json.load(f)


def _knn_at(preset, seed, step):
  path = os.path.join("results/fashion_mnist_long/runs", preset, f"seed{seed}", "metrics.jsonl")
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return next(r["knn_top1/student"] for r in rows if r["step"] == step and "knn_top1/student" in r)


def test_the_long_discussions_numbers_are_its_records():
  """Statements of RESULTS.md's long discussion recomputed from the archived records (a review found them off)."""
  with open("RESULTS.md") as f:
    text = f.read()
  moco = _archived("moco_v2_e10", 0)["knn_top1/student"]
  assert f"({moco:.2f} kNN, {84.6 - moco:.2f} points under pixels' 84.6;" in text
  fast = [_archived("simdis_on_7v_e10", s, "linear_fast/linear_eval.json")["top1"] for s in (0, 1, 2)]
  mean = sum(fast) / 3
  std = (sum((x - mean) ** 2 for x in fast) / 2) ** 0.5
  assert f"SimDis-On-7v's 0.29, 0.06 and {std:.2f}." in text
  alone = [_archived("byol_student_e10", s)["knn_top1/student"] for s in (0, 1, 2)]
  assert "the student alone ends " + ", ".join(
    f"{a - 84.6:.2f}" for a in alone[:2]
  ) + f" and {alone[2] - 84.6:.2f}" in text.replace("\n  ", " ")
  last_two = [_knn_at("byol_student_e10", s, 4680) - _knn_at("byol_student_e10", s, 3744) for s in (0, 1, 2)]
  assert (
    f"rises on seed 1 ({last_two[1]:+.2f}) and is flat on seeds 0 and 2 ({last_two[0]:+.2f}, {last_two[2]:+.2f})"
  ).replace("-", "−") in text.replace("\n  ", " ")
  early = [_knn_at("simdis_off_7v_e10", s, 936) for s in (0, 1, 2)]
  assert "86.8–87.1 kNN" in text and round(min(early), 1) == 86.8 and round(max(early), 1) == 87.1
  assert (
    f"above where the student alone ends after 10 on seeds 0 and 1 ({alone[0]:.2f}, {alone[1]:.2f}), "
    f"{alone[2] - early[2]:.2f} below it on seed 2 ({early[2]:.2f} against {alone[2]:.2f})"
  ) in text.replace("\n  ", " ")
  assert early[0] > alone[0] and early[1] > alone[1] and early[2] < alone[2]
