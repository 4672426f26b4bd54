"""The Fashion-MNIST study (3 epochs): presets, the runner, the archive, the report (simdis_jax/tools/study)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import requires_fashion_mnist, xla_flags
from simdis_jax import configuration
from simdis_jax.tools.study import archive, plan, report, significance
from simdis_jax.tools.study import results as study_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs", "fashion_mnist"))
import presets  # noqa: E402  pylint: disable=wrong-import-position,import-error
import study as study_config  # noqa: E402  pylint: disable=wrong-import-position,import-error


def flat(config, prefix=""):
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differing_keys(a, b):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  return {k for k in fa if fa[k] != fb[k]}


def test_every_preset_parses_and_validates():
  for name in presets.PRESETS:
    c = configuration.validate(presets.get_config(name))
    assert c.method == presets.PRESETS[name][0] and c.views == tuple(presets.PRESETS[name][1])
    assert c.data.name == "fashion_mnist" and c.train.epochs == 3.0 and c.train.batch_size == 128
    assert c.train.steps == (1 if name == "untrained_student" else -1)
  with pytest.raises(ValueError, match="Unknown Fashion-MNIST preset 'byol_studnet'.*byol_student"):
    presets.get_config("byol_studnet")


def test_student_presets_differ_from_the_student_alone_only_in_method_views_and_teacher():
  base = presets.get_config("byol_student")
  expected = {
    "simdis_off_2v": {"method", "views", "teacher.workdir"},
    "simdis_off_7v": {"method", "views", "teacher.workdir"},
    "off_t_sv": {"method", "views", "teacher.workdir"},
    "off_t_dv": {"method", "views", "teacher.workdir"},
    "off_tema_sv": {"method", "views", "teacher.workdir"},
    "simdis_on_2v": {"method", "views"},
    "simdis_on_7v": {"method", "views"},
    "supervised": {"method"},
    "untrained_student": {"train.steps", "optim.warmup_init_lr"},
    # The teacher run is BYOL on the teacher network: only the trained network differs.
    "byol_teacher": {"model.student.depth", "model.student.width"},
    # Figure 3's other systems: their authors' recipes (simdis_jax/methods/recipes.py), same student.
    "moco_v2": {
      "method",
      "data.augment.blur_prob",
      "data.augment.saturation",
      "data.augment.solarize_prob",
      "knn.networks",
      "moco.queue_size",
      "model.student.hidden_dim",
      "model.student.projector",
      "model.sync_bn",
      "optim.base_lr",
      "optim.name",
      "optim.warmup_epochs",
      "optim.weight_decay",
    },
    "seed": {
      "method",
      "data.augment.blur_prob",
      "data.augment.saturation",
      "data.augment.solarize_prob",
      "model.student.hidden_dim",
      "model.student.projector",
      "model.sync_bn",
      "optim.base_lr",
      "optim.name",
      "optim.warmup_init_lr",
      "optim.weight_decay",
      "seed_distill.queue_size",
      "teacher.bn_mode",
      "teacher.workdir",
    },
    "supervised_standard": {
      "method",
      "data.augment.blur_prob",
      "data.augment.grey_prob",
      "data.augment.jitter_prob",
      "data.augment.solarize_prob",
      "knn.networks",
      "optim.base_lr",
      "optim.name",
      "optim.schedule",
      "optim.step_epochs",
      "optim.warmup_epochs",
      "optim.weight_decay",
      "supervised.views",
    },
  }
  assert set(expected) == set(presets.PRESETS) - {"byol_student"}
  for name, keys in expected.items():
    assert differing_keys(base, presets.get_config(name)) == keys, name
  # The offline students' teacher network is the BYOL teacher run's network.
  assert dict(presets.get_config("simdis_off_7v").model.teacher) == dict(
    presets.get_config("byol_teacher").model.student
  )
  assert presets.get_config("simdis_on_7v").views == tuple(configuration.VIEW_PRESETS["simdis_7v"])


def test_the_study_lists_known_presets_with_three_seeds_for_the_central_comparison():
  c = study_config.get_config()
  runs = plan.parse_runs(c.runs)
  assert len(runs) == len(set(runs))
  # Figure 3's other systems ran in the long study only (configs/fashion_mnist/study_long.py)
  assert {p for p, _ in runs} == set(presets.PRESETS) - {"moco_v2", "seed", "supervised_standard"}
  assert runs[0] == plan.parse_runs([c.teacher_run])[0] == ("byol_teacher", 0)  # the offline teacher first
  for preset in tuple(c.central) + ("supervised",):
    assert sorted(s for p, s in runs if p == preset) == [0, 1, 2]
  assert plan.parse_runs(["a:0,1", "b:2", "a:1"]) == [("a", 0), ("a", 1), ("b", 2)]
  for bad in ("byol_student", "byol_student:", "byol_student:x"):
    with pytest.raises(ValueError, match="Study entry .*byol_student:0,1,2"):
      plan.parse_runs([bad])
  fast = plan.commands(c, "w", "byol_student", 1)[1]
  assert fast[1:] == [
    "-m",
    "simdis_jax.main",
    "--config=configs/fashion_mnist/linear_eval.py:authors,fast",
    "--config.seed=1",
    f"--workdir={os.path.join('w', 'byol_student', 'seed1', 'linear_fast')}",
    f"--config.pretrained.workdir={os.path.join('w', 'byol_student', 'seed1')}",
  ]
  cmd = plan.command(c, "w", "simdis_off_7v", 2)
  assert cmd[1:] == [
    "-m",
    "simdis_jax.main",
    "--config=configs/fashion_mnist/presets.py:simdis_off_7v",
    "--config.seed=2",
    f"--workdir={os.path.join('w', 'simdis_off_7v', 'seed2')}",
    f"--config.teacher.workdir={os.path.join('w', 'byol_teacher', 'seed0')}",
  ]


def fake_run(workdir, preset, seed, linear, knn, minutes=2.0, **summary):
  d = os.path.join(workdir, preset, f"seed{seed}")
  os.makedirs(os.path.join(d, "linear_student"))
  with open(os.path.join(d, "summary.json"), "w") as f:
    json.dump(
      {
        "knn_top1/student": knn,
        "knn_top1/student_init": 70.0,
        "train_time_s": 60 * minutes,
        "step_flops": 2.5e9,
        "epochs": 3.0,
        "steps": 1404,
        **summary,
      },
      f,
    )
  with open(os.path.join(d, "linear_student", "linear_eval.json"), "w") as f:
    json.dump({"top1": linear, "top5": 99.0, "wall_time_s": 60.0, "epochs": 10.0}, f)
  os.makedirs(os.path.join(d, plan.FAST_LINEAR_DIR))
  with open(os.path.join(d, plan.FAST_LINEAR_DIR, "linear_eval.json"), "w") as f:
    json.dump({"top1": linear + 5.0, "top5": 99.0, "wall_time_s": 20.0, "epochs": 80.0}, f)


def test_report_gives_mean_and_sample_std_over_seeds_and_keeps_text_outside_its_markers(tmp_path):
  c = study_config.get_config()
  c.runs = ("byol_student:0,1,2", "simdis_off_7v:0,1,2", "simdis_on_7v:0,1")
  c.paper.byol_student = ("12.34", "a table")  # the study's data is its config's
  c.references_title = "References here"
  work = str(tmp_path / "w")
  for seed, (a, b) in enumerate([(80.0, 81.0), (81.0, 82.0), (82.0, 83.0)]):
    fake_run(work, "byol_student", seed, a, b)
    fake_run(work, "simdis_off_7v", seed, a + 3.0, b + 0.1 * seed)
  fake_run(work, "simdis_on_7v", 0, 84.0, 85.0, **{"knn_top1/teacher": 83.5})
  results = tmp_path / "RESULTS.md"
  results.write_text(f"# Mine\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Discussion\nkept\n")
  report.write_study_report(c, work, str(results), str(tmp_path / "fig"))
  text = results.read_text()
  assert text.startswith("# Mine\n\nintro\n") and text.endswith("## Discussion\nkept\n") and "\nold\n" not in text
  rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
  student = rows[c.labels["byol_student"]]
  assert student[1] == "0,1,2" and student[2] == "81.00 ± 1.00" and student[3] == "86.00 ± 1.00"
  assert student[4] == "82.00 ± 1.00" and student[5] == "70.00 ± 0.00" and student[6] == "2.5"
  assert student[7] == "2.0" and student[9] == "12.34 (a table) |"
  assert "\nReferences here: logistic regression on raw pixels (linear) 84.4%; " in text
  assert rows[c.labels["simdis_off_7v"]][2] == "84.00 ± 1.00"
  assert rows[c.labels["simdis_on_7v"]][1] == "0 (of 0,1)" and rows[c.labels["simdis_on_7v"]][2] == "84.00"
  # Off-7v - student: linear +3.00 with s.e. sqrt(1/3 + 1/3) = 0.82, Welch t = 3.67 on 4 dof -> p = 0.02, beyond.
  # kNN: +0.10 with s.e. sqrt(1/3 + 1.21/3) = 0.86 -> p = 0.91, within.
  # Paired by seed: linear +3.00 on every seed (s.e. 0, p = 0); kNN +0.0, +0.1, +0.2 -> t = 1.73 on 2 dof, p = 0.225.
  assert (
    "SimDis-Off-7v (claim 1): linear (full) +3.00 ± 0.82 (beyond seed noise, p = 0.021; paired by seed over 3: "
    "+3.00 ± 0.00, p = 0.000); linear (fast) +3.00 ± 0.82 (beyond seed noise, p = 0.021; paired by seed "
    "over 3: +3.00 ± 0.00, p = 0.000); kNN +0.10 ± 0.86 (within seed noise, p = 0.913; paired by seed over 3: "
    "+0.10 ± 0.06, p = 0.225)"
  ) in text
  assert (
    "SimDis-On-7v (claim 1): linear (full) +3.00 (3 seeds vs 1: no seed spread to test; seed 0 alone: +4.00)"
  ) in text
  assert (
    "SimDis-Off-7v − SimDis-On-7v (claim 2, 7 views): linear (full) +0.00 (1 seed vs 3: no seed spread to test; "
    "seed 0 alone: -1.00)"
  ) in text
  # The offline teacher is named by its label (its schedule may differ from the online run's); not run here.
  assert (
    "\nThe online teachers of SimDis-On-7v reached kNN top-1 83.50; the offline teacher (BYOL teacher (R18 w16)) —.\n"
  ) in text
  assert "Runs finished**: 7 of 8" in text
  assert "**Code**: " in text
  assert (tmp_path / "fig" / "study_top1.png").read_bytes()[:4] == b"\x89PNG"
  saved = json.loads((tmp_path / "fig" / "results.json").read_text())
  assert saved["byol_student"]["linear_top1"][:3] == [81.0, 1.0, 3]


def test_seed_differences_are_welch_t_tests_on_the_seeds():
  """difference() agrees with scipy's Welch test on raw per-seed figures; one seed gives no p-value."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import scipy.stats  # pylint: disable=import-outside-toplevel

  student, distilled = [81.91, 83.45, 80.2], [86.02, 85.1, 86.9]
  summary = lambda xs: (float(np.mean(xs)), float(np.std(xs, ddof=1)), len(xs))  # noqa: E731
  d, se, p = significance.difference(summary(student), summary(distilled))
  expected = scipy.stats.ttest_ind(distilled, student, equal_var=False)
  assert d == pytest.approx(np.mean(distilled) - np.mean(student))
  assert d / se == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
  assert 0.001 < p < 0.05
  d1, _, p1 = significance.difference(summary(student), summary(distilled[:1]))
  assert d1 == pytest.approx(86.02 - np.mean(student)) and p1 != p1  # nan: no spread on one side
  # Paired by seed, over the seeds both finished (seed 3 of the distilled run has no partner).
  runs_a = {k: {"knn": v} for k, v in enumerate(student)}
  runs_b = {k: {"knn": v} for k, v in enumerate(distilled + [90.0])}
  d, se, p, n = significance.paired_difference(runs_a, runs_b, "knn")
  expected = scipy.stats.ttest_rel(distilled, student)
  assert n == 3 and d == pytest.approx(np.mean(np.subtract(distilled, student)))
  assert d / se == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
  assert significance.paired_difference(runs_a, {0: {"knn": 85.0}}, "knn")[3] == 1


def test_the_archive_carries_finished_runs_and_the_teachers_checkpoint_to_a_fresh_workdir(tmp_path):
  c = study_config.get_config()
  c.runs = ("byol_teacher:0", "byol_student:0,1", "simdis_off_7v:0")
  work, store, fresh = str(tmp_path / "w"), str(tmp_path / "archive"), str(tmp_path / "fresh")
  fake_run(work, "byol_teacher", 0, 79.0, 84.0)
  fake_run(work, "byol_student", 0, 73.0, 81.0)
  teacher = os.path.join(work, "byol_teacher", "seed0")
  for step, finished in ((1200, True), (1406, True), (1500, False)):  # 1500: an unfinished save, not archived
    os.makedirs(os.path.join(teacher, "checkpoints", str(step), "default"))
    with open(os.path.join(teacher, "checkpoints", str(step), "default", "data"), "w") as f:
      f.write(f"weights of step {step}")
    if finished:
      open(os.path.join(teacher, "checkpoints", str(step), "commit_success.txt"), "w").close()
  status = {
    "failed": {},
    "segments": [
      {"run": "byol_student/seed0", "seconds": 600.0, "exit": 0, "commit": "abc1234"},
      {"run": "byol_teacher/seed0", "seconds": 1800.0, "exit": 0, "commit": "abc1234"},
    ],
  }
  archive.sync_archive(c, work, store, status)
  stored = os.path.join(store, "byol_teacher", "seed0")
  assert sorted(os.listdir(os.path.join(stored, "checkpoints"))) == ["1406"]  # the final one alone
  assert not os.path.exists(os.path.join(store, "byol_student", "seed0", "checkpoints"))
  assert not os.path.exists(os.path.join(store, "byol_student", "seed1"))  # not finished: not archived
  assert json.load(open(os.path.join(store, "byol_student", "seed0", archive.SEGMENTS_FILE)))[0]["commit"] == "abc1234"

  fresh_status = {"failed": {}, "segments": []}
  archive.sync_archive(c, fresh, store, fresh_status)
  for preset in ("byol_teacher", "byol_student"):
    assert plan.is_done(c, os.path.join(fresh, preset, "seed0"))
    same = [
      json.dumps(study_results.collect(c, os.path.join(w, preset, "seed0")), sort_keys=True) for w in (fresh, work)
    ]
    assert same[0] == same[1] and '"linear_top1": 7' in same[0]  # NaN-safe equality of the figures
  with open(os.path.join(fresh, "byol_teacher", "seed0", "checkpoints", "1406", "default", "data")) as f:
    assert f.read() == "weights of step 1406"
  assert plan.commands(c, fresh, "byol_student", 0) == [] and len(plan.commands(c, fresh, "byol_student", 1)) == 2
  assert {g["run"] for g in fresh_status["segments"]} == {"byol_student/seed0", "byol_teacher/seed0"}
  archive.sync_archive(c, fresh, store, fresh_status)  # again: nothing restored twice
  assert len(fresh_status["segments"]) == 2


@requires_fashion_mnist
@pytest.mark.slow
def test_the_study_command_runs_a_preset_end_to_end_then_skips_it(tmp_path):
  work, results = tmp_path / "w", tmp_path / "RESULTS.md"
  cmd = [
    sys.executable,
    "-m",
    "simdis_jax.study",
    "--config",
    "tests/tiny_study.py",
    "--workdir",
    str(work),
    "--results",
    str(results),
    "--figures",
    str(tmp_path / "fig"),
    "--archive",
    str(tmp_path / "archive"),
  ]
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  run = work / "supervised" / "seed3"
  assert proc.returncode == 0, proc.stdout[-2000:] + (run / "output.log").read_text()[-3000:]
  assert "1 of 1 runs done" in proc.stdout
  summary = json.loads((run / "summary.json").read_text())
  assert summary["steps"] == 3 and summary["step_flops"] > 0 and summary["train_time_s"] > 0
  linear = json.loads((run / "linear_student" / "linear_eval.json").read_text())
  assert (
    linear["pretrained_method"] == "supervised"
    and linear["mode"] == "full"
    and linear["protocol"] == "deepmind"
    and 0 <= linear["top1"] <= 100
  )
  fast = json.loads((run / plan.FAST_LINEAR_DIR / "linear_eval.json").read_text())
  assert (fast["mode"], fast["protocol"], fast["epochs"]) == ("fast", "authors", 2.0)
  label = study_config.get_config().labels["supervised"]
  row = [l for l in results.read_text().splitlines() if l.startswith(f"| {label} |")]
  assert len(row) == 1 and f"| {linear['top1']:.2f} | {fast['top1']:.2f} |" in row[0]
  again = subprocess.run(cmd + ["--dry_run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and again.stdout == "[done] supervised seed 3\n"
  rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0 and "Study: supervised" not in rerun.stdout and "1 of 1 runs done" in rerun.stdout
  # Another machine: an empty workdir and the archive. The run is restored, not run again.
  assert json.loads((tmp_path / "archive" / "supervised" / "seed3" / "summary.json").read_text()) == summary
  elsewhere = [a if a != str(work) else str(tmp_path / "w2") for a in cmd]
  dry = subprocess.run(elsewhere + ["--dry_run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert dry.returncode == 0 and dry.stdout.startswith("[archived] supervised seed 3"), dry.stdout
  moved = subprocess.run(elsewhere, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert (
    moved.returncode == 0 and "restored 1 finished run" in moved.stdout and "Study: supervised seed" not in moved.stdout
  )
  assert json.loads((tmp_path / "w2" / "supervised" / "seed3" / "summary.json").read_text()) == summary


def test_the_commit_of_a_run_is_dirty_only_when_the_code_differs(tmp_path):
  """The runner rewrites RESULTS.md and results/ in its own checkout after every run: that is not a code change."""

  def git(*args):
    subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

  for path in ("simdis_jax/train.py", "configs/x.py", "RESULTS.md", "results/r.json"):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("a\n")
  git("init", "-q")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
  sha = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
  ).stdout.strip()
  where = str(tmp_path / "results")  # asked from a subfolder, as the package asks from simdis_jax/tools/study
  (tmp_path / "RESULTS.md").write_text("rewritten by the study\n")
  (tmp_path / "results" / "r.json").write_text("b\n")
  assert report.commit(where) == sha
  for code in ("configs/x.py", "simdis_jax/train.py"):
    (tmp_path / code).write_text("changed\n")
    assert report.commit(where) == f"{sha} (with uncommitted changes)", code
    git("checkout", "--", code)
