"""The results report, on fake workdirs written here (no training): table, JSON, figures, CLI, errors."""

import json
import os
import subprocess
import sys

import matplotlib.colors
import matplotlib.image
import pytest

from simdis_jax import labels, methods
from simdis_jax import report as report_cli
from simdis_jax import workdir as workdir_files
from simdis_jax.methods import simdis
from simdis_jax.evaluation import report, report_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_VIEWS = list(simdis.VIEWS)


def write_json(path, obj):
  """Writes obj as JSON to path."""
  path.write_text(json.dumps(obj), encoding="utf-8")


def fake_run(
  root,
  name,
  method,
  views,
  batch,
  epochs,
  steps_per_epoch,
  knn,
  knn_init,
  finished=True,
  last_step=None,
  wall=9000.0,
  rate=1234.5,
):
  """A pretraining workdir as train.py leaves it; `knn` / `knn_init` map network -> top-1."""
  wd = root / name
  wd.mkdir()
  net = lambda width: {"depth": 10, "width": width, "cifar_stem": True, "hidden_dim": 32, "proj_dim": 16}
  write_json(
    wd / "config.json",
    {
      "method": method,
      "views": views,
      "seed": 0,
      "model": {"student": net(8), "teacher": net(16), "sync_bn": True},
      "train": {"batch_size": batch, "epochs": float(epochs), "steps": 0},
      "data": {"name": "fashion_mnist"},
      "optim": {"name": "lars"},
      "teacher": {"workdir": ""},
    },
  )
  total = epochs * steps_per_epoch
  write_json(
    wd / "run_info.json",
    {
      "steps_per_epoch": steps_per_epoch,
      "total_steps": total,
      "warmup_steps": 0,
      "num_train": 60000,
      "devices": 1,
      "processes": 1,
    },
  )
  last = total if last_step is None else last_step
  lines = [{"step": 0, **{f"knn_top1/{n}": v for n, v in knn_init.items()}}]
  for step in range(steps_per_epoch, last + 1, steps_per_epoch):
    values = {
      "loss": 4.0 - step / total,
      "loss_student": 2.0 - step / (2 * total),
      "lr": 0.1,
      "tau": 0.99,
      "images_per_sec": rate,
      "epoch": step / steps_per_epoch,
    }
    if method == "simdis_on":
      values["loss_teacher"] = 1.5
    values.update({f"loss_head/{v}": 2.0 for v in views})
    lines.append({"step": step, **values})
  # A resumed run repeats a step: the second value must win.
  lines.append({"step": steps_per_epoch, "loss": 3.5})
  lines.append({"step": last, **{f"knn_top1/{n}": v for n, v in knn.items()}})
  (wd / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
  if finished:
    write_json(
      wd / "summary.json",
      {
        **{f"knn_top1/{n}": v for n, v in knn.items()},
        **{f"knn_top1/{n}_init": v for n, v in knn_init.items()},
        "train_wall_time_s": wall,
        "images_per_sec": rate,
        "steps": total,
        "total_steps": total,
        "epochs": float(epochs),
      },
    )
  return wd


def fake_linear(root, name, pretrained, network="student", top1=70.456, top5=90.123, finished=True, recorded_as=None):
  """A linear-evaluation workdir as evaluation/linear.py leaves it (its own config.json and metrics too).

  `recorded_as` is the pretrained workdir as typed on linear.py's command line (may be relative);
  linear_info.json always has the absolute path.
  """
  wd = root / name
  wd.mkdir()
  write_json(
    wd / "config.json",
    {
      "task": "linear_eval",
      "protocol": "authors",
      "mode": "fast",
      "pretrained": {"workdir": str(recorded_as or pretrained), "network": network},
      "train": {"batch_size": 256, "epochs": 80.0},
    },
  )
  write_json(
    wd / "linear_info.json",
    {"pretrained_workdir": os.path.abspath(pretrained), "network": network, "steps_per_epoch": 10, "total_steps": 800},
  )
  (wd / "metrics.jsonl").write_text(json.dumps({"step": 800, "eval_top1": top1}) + "\n", encoding="utf-8")
  if finished:
    write_json(
      wd / "linear_eval.json",
      {
        "pretrained_workdir": str(recorded_as or pretrained),
        "pretrained_step": 1000,
        "network": network,
        "weights": "online",
        "protocol": "authors",
        "mode": "fast",
        "mode_name": "fast (cached features, no augmentation)",
        "epochs": 80.0,
        "top1": top1,
        "top5": top5,
        "finished": True,
        "wall_time_s": 321.0,
      },
    )
  return wd


@pytest.fixture
def workdirs(tmp_path):
  """Two finished runs (BYOL, SimDis-On-7v) and a linear eval of the BYOL student."""
  byol = fake_run(
    tmp_path, "byol_r10", "byol", ["sema_dv"], 256, 100, 10, knn={"student": 61.234}, knn_init={"student": 10.5}
  )
  on7 = fake_run(
    tmp_path,
    "on7v_r10",
    "simdis_on",
    ALL_VIEWS,
    512,
    200,
    5,
    knn={"student": 65.0, "teacher": 68.75},
    knn_init={"student": 11.0, "teacher": 9.0},
    wall=50.0,
    rate=42.25,
  )
  lin = fake_linear(tmp_path, "byol_r10_linear", byol)
  return byol, on7, lin


def table(markdown):
  """The markdown table as a list of {header: cell} dicts."""
  lines = [l for l in markdown.splitlines() if l.startswith("|")]
  split = lambda l: [c.strip() for c in l.strip().strip("|").split(" | ")]
  headers = split(lines[0])
  return [dict(zip(headers, split(l))) for l in lines[2:]]


def check_png(path):
  """A real PNG that matplotlib reads back as an RGB(A) image of plausible size."""
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE, path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
  assert 200 <= image.shape[0] <= 3000 and 200 <= image.shape[1] <= 3000, image.shape
  assert image.std() > 0  # not a blank canvas


def check_report(out, markdown):
  """The shared assertions on the files written for the `workdirs` fixture."""
  assert (out / "results.md").read_text(encoding="utf-8") == markdown
  rows = table(markdown)
  assert len(rows) == 2
  byol, on7 = rows
  assert byol["run"] == "byol_r10" and on7["run"] == "on7v_r10"
  assert byol["method"] == "BYOL" and on7["method"] == "SimDis-On-7v"
  assert byol["views"] == "Ŝ-v'"
  assert on7["views"] == "S-v', Ŝ-v, Ŝ-v', T-v, T-v', T̂-v, T̂-v'"
  assert byol["network"] == "student (online)" and on7["network"] == "student"
  assert byol["teacher"] == "—" and on7["teacher"] == "ResNet-10 w16"
  assert byol["encoder"] == on7["encoder"] == "ResNet-10 w8"
  assert (byol["epochs"], byol["batch"]) == ("100", "256")
  assert (on7["epochs"], on7["batch"]) == ("200", "512")
  assert byol["kNN top-1 (step 0)"] == "61.23 (10.50)"
  assert on7["kNN top-1 (step 0)"] == "65.00 (11.00)"
  assert (byol["linear top-1"], byol["linear top-5"]) == ("70.46", "90.12")
  assert (on7["linear top-1"], on7["linear top-5"], on7["protocol"]) == ("—", "—", "—")
  assert byol["protocol"] == "authors; fast (cached features, no augmentation); 80 ep"
  assert (byol["wall time"], byol["images/s"]) == ("2.5 h", "1,234")
  assert (on7["wall time"], on7["images/s"]) == ("50 s", "42.2")

  data = json.loads((out / "results.json").read_text(encoding="utf-8"))
  j_byol, j_on7 = data["rows"]
  assert j_byol["run"] == "byol_r10" and j_byol["method"] == "byol" and j_byol["method_label"] == "BYOL"
  assert j_byol["knn_top1"] == pytest.approx(61.234) and j_byol["knn_top1_init"] == 10.5
  assert j_byol["linear_top1"] == pytest.approx(70.456) and j_byol["linear_top5"] == pytest.approx(90.123)
  assert j_byol["epochs"] == 100 and j_byol["batch_size"] == 256 and j_byol["finished"] is True
  assert j_on7["method_label"] == "SimDis-On-7v" and j_on7["views"] == ALL_VIEWS
  assert j_on7["knn_top1"] == 65.0 and j_on7["linear_top1"] is None and j_on7["batch_size"] == 512
  assert [r["cells"] for r in data["rows"]] == rows

  for name in ("curves_byol_r10.png", "curves_on7v_r10.png", "accuracy_vs_epochs.png"):
    check_png(out / name)
  assert set(data["figures"]) == {"curves_byol_r10.png", "curves_on7v_r10.png", "accuracy_vs_epochs.png"}


def test_write_report_tables_and_figures(workdirs, tmp_path):
  byol, on7, lin = workdirs
  out = tmp_path / "out"
  # Linear eval first: the order of the arguments must not matter.
  markdown = report.write_report([str(lin), str(byol), str(on7)], str(out))
  check_report(out, markdown)


def test_cli_prints_the_table_and_writes_the_files(workdirs, tmp_path):
  byol, on7, lin = workdirs
  out = tmp_path / "cli_out"
  proc = subprocess.run(
    [sys.executable, "-m", "simdis_jax.report", str(byol), str(lin), str(on7), "--out", str(out), "--noembeddings"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  markdown = (out / "results.md").read_text(encoding="utf-8")
  check_report(out, markdown)
  # The console gets plain text: no markdown bars, no figure links; the same cells, the protocol left out.
  assert "|" not in proc.stdout and "![" not in proc.stdout and "](" not in proc.stdout
  lines = proc.stdout.splitlines()
  header = lines.index(next(l for l in lines if l.startswith("run ")))
  assert set(lines[header + 1]) <= {"-", " "}
  assert lines[header + 2].split()[:2] == ["byol_r10", "BYOL"] and "70.46" in lines[header + 2]
  assert lines[header + 3].split()[:2] == ["on7v_r10", "SimDis-On-7v"]
  assert "protocol" not in lines[header] and "linear top-1" in lines[header]


def test_teacher_linear_eval_adds_a_teacher_row(workdirs, tmp_path):
  byol, on7, lin = workdirs
  teacher_lin = fake_linear(tmp_path, "on7v_teacher_linear", on7, network="teacher", top1=72.0, top5=91.0)
  markdown = report.write_report([str(byol), str(on7), str(lin), str(teacher_lin)], str(tmp_path / "out"))
  rows = table(markdown)
  assert [(r["run"], r["network"]) for r in rows] == [
    ("byol_r10", "student (online)"),
    ("on7v_r10", "student"),
    ("on7v_r10", "teacher (online)"),
  ]
  teacher = rows[2]
  assert teacher["encoder"] == "ResNet-10 w16" and teacher["teacher"] == "—"
  assert teacher["kNN top-1 (step 0)"] == "68.75 (9.00)"
  assert (teacher["linear top-1"], teacher["linear top-5"]) == ("72.00", "91.00")


def test_linear_eval_alone_pulls_in_its_run(workdirs, tmp_path):
  _, _, lin = workdirs
  rows = table(report.write_report([str(lin)], str(tmp_path / "out")))
  assert len(rows) == 1 and rows[0]["run"] == "byol_r10" and rows[0]["linear top-1"] == "70.46"


def test_unfinished_run_is_marked_and_uses_the_last_metrics(tmp_path):
  wd = fake_run(
    tmp_path,
    "half",
    "simdis_off",
    ["sema_dv", "tema_dv"],
    16,
    4,
    1,
    knn={"student": 30.0},
    knn_init={"student": 10.0},
    finished=False,
    last_step=2,
    rate=7.5,
  )
  markdown = report.write_report([str(wd)], str(tmp_path / "out"))
  (row,) = table(markdown)
  assert row["run"] == "half (unfinished, step 2 of 4)"
  assert row["method"] == "SimDis-Off" and row["views"] == "Ŝ-v', T̂-v'"
  assert row["epochs"] == "2" and row["kNN top-1 (step 0)"] == "30.00 (10.00)"
  assert row["images/s"] == "7.5" and row["wall time"] == "—"
  data = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
  assert data["rows"][0]["finished"] is False and data["rows"][0]["step"] == 2
  check_png(tmp_path / "out" / "curves_half.png")


def test_missing_or_foreign_workdir_is_a_clear_error(workdirs, tmp_path):
  byol, _, _ = workdirs
  missing = tmp_path / "no_such_run"
  with pytest.raises(ValueError, match="no_such_run.*does not exist"):
    report.write_report([str(byol), str(missing)], str(tmp_path / "out"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="holds neither config.json .* nor linear_eval.json"):
    report.write_report([str(empty)], str(tmp_path / "out"))
  with pytest.raises(SystemExit, match="no_such_run"):
    report_cli.main([str(missing), "--out", str(tmp_path / "out")])


def test_metrics_keep_the_last_value_of_a_repeated_step(workdirs):
  byol, _, _ = workdirs
  metrics = workdir_files.read_metrics(str(byol))
  assert metrics[10]["loss"] == 3.5 and metrics[10]["lr"] == 0.1  # overridden key, kept key
  assert metrics[0] == {"knn_top1/student": 10.5}


def test_names_match_the_method_module():
  assert report.PAPER_VIEW_NAMES is simdis.PAPER_NAMES is labels.VIEW_NAMES  # one table, not copies
  assert set(report.PAPER_VIEW_NAMES) == set(simdis.VIEWS)
  assert set(report.METHOD_NAMES) == set(methods.METHODS)
  assert report.method_label("simdis_off", ALL_VIEWS) == "SimDis-Off-7v"
  assert report.method_label("simdis_on", ["sema_dv", "tema_dv"]) == "SimDis-On"
  assert report.format_epochs(0.0016) == "0.0016" and report.format_epochs(12.5) == "12.5"


def test_same_basename_gets_separate_figures_and_orphan_eval_is_kept(tmp_path, capsys):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  runs = [
    fake_run(tmp_path / d, "run", "byol", ["sema_dv"], 32, 2, 3, knn={"student": 20.0}, knn_init={"student": 10.0})
    for d in ("a", "b")
  ]
  orphan = fake_linear(tmp_path, "lost_linear", tmp_path / "deleted_run", top1=55.0)
  out = tmp_path / "out"
  rows = table(report.write_report([str(runs[0]), str(runs[1]), str(orphan)], str(out)))
  assert [r["run"] for r in rows] == ["run", "run_2", "deleted_run (pretraining workdir not found)"]
  assert rows[2]["linear top-1"] == "55.00" and rows[2]["method"] == "—"
  assert "deleted_run" in capsys.readouterr().err
  check_png(out / "curves_run.png")
  check_png(out / "curves_run_2.png")


def test_linear_eval_with_a_relative_path_and_an_unfinished_one(workdirs, tmp_path, capsys):
  byol, on7, _ = workdirs
  relative = fake_linear(tmp_path, "rel_linear", on7, top1=66.6, recorded_as="somewhere/else/on7v_r10")
  running = fake_linear(tmp_path, "running_linear", byol, finished=False)
  rows = table(report.write_report([str(running), str(relative)], str(tmp_path / "out")))
  # The relative path is joined through linear_info.json; the running eval is skipped, not an error,
  # and neither linear workdir is mistaken for a pretraining run although both hold config.json.
  assert [(r["run"], r["linear top-1"]) for r in rows] == [("on7v_r10", "66.60")]
  assert "running_linear" in capsys.readouterr().err


def test_a_pretraining_workdir_brings_its_own_linear_evaluations(tmp_path):
  # As final_eval writes them: <run>/linear_student and <run>/linear_teacher; only the run is given.
  run = fake_run(
    tmp_path,
    "demo",
    "simdis_on",
    ALL_VIEWS,
    128,
    2,
    5,
    knn={"student": 70.0, "teacher": 72.0},
    knn_init={"student": 60.0, "teacher": 61.0},
  )
  fake_linear(run, "linear_student", run, top1=75.5)
  fake_linear(run, "linear_teacher", run, network="teacher", top1=77.25)
  rows = table(report.write_report([str(run)], str(tmp_path / "out"), embeddings=False))
  assert [(r["network"], r["linear top-1"]) for r in rows] == [
    ("student (online)", "75.50"),
    ("teacher (online)", "77.25"),
  ]
  assert rows[1]["views"] == "T̂-v' (BYOL)"  # the teacher's own target, not the student's seven
  # Moved (archived) with its linear evaluations, which still name the old place: still its own.
  moved = tmp_path / "archive"
  moved.mkdir()
  os.rename(run, moved / "demo")
  rows = table(report.write_report([str(moved / "demo")], str(tmp_path / "out2"), embeddings=False))
  assert [r["linear top-1"] for r in rows] == ["75.50", "77.25"]


def test_a_distilling_workdir_brings_its_student_trained_alone(tmp_path):
  # As the demo leaves it (config.final_eval.student_alone): <run>/alone is BYOL on the same student.
  run = fake_run(
    tmp_path,
    "demo",
    "simdis_off",
    ALL_VIEWS,
    128,
    2,
    5,
    knn={"student": 82.5, "teacher": 85.4},
    knn_init={"student": 73.1, "teacher": 85.4},
  )
  fake_run(run, "alone", "byol", ["sema_dv"], 128, 2, 5, knn={"student": 76.6}, knn_init={"student": 73.1})
  rows = table(report.write_report([str(run)], str(tmp_path / "out"), embeddings=False))
  assert [(r["run"], r["method"], r["kNN top-1 (step 0)"]) for r in rows] == [
    ("demo", "SimDis-Off-7v", "82.50 (73.10)"),
    ("alone", "BYOL", "76.60 (73.10)"),
  ]
  rows = table(report.write_report([str(run), str(run / "alone")], str(tmp_path / "out2"), embeddings=False))
  assert [r["run"] for r in rows] == ["demo", "alone"]  # given twice: one row


def test_views_and_teacher_columns_say_what_each_method_uses(tmp_path):
  runs = [
    fake_run(tmp_path, m, m, ["sema_dv"], 64, 2, 5, knn={"student": 50.0}, knn_init={"student": 40.0})
    for m in ("moco_v2", "seed", "supervised", "byol")
  ]
  rows = {
    r["run"]: r for r in table(report.write_report([str(r) for r in runs], str(tmp_path / "out"), embeddings=False))
  }
  assert rows["moco_v2"]["views"] == "query v, key v' (queue)" and rows["moco_v2"]["teacher"] == "—"
  assert rows["seed"]["views"] == "one view; teacher similarities (queue)"
  assert rows["seed"]["teacher"] == "ResNet-10 w16"  # SEED distils from a teacher: its architecture is shown
  assert rows["supervised"]["views"] == "labels" and rows["byol"]["views"] == "Ŝ-v'"
  assert labels.targets("supervised", [], 1) == "labels, 1 view"
  assert labels.targets("seed", ["sema_dv"]) == labels.METHOD_TARGETS["seed"]  # its views are not shown


def test_accuracy_series_keep_architectures_apart(tmp_path):
  from simdis_jax.evaluation import figures  # pylint: disable=import-outside-toplevel

  small = fake_run(tmp_path, "small", "byol", ["sema_dv"], 64, 2, 5, knn={"student": 50.0}, knn_init={"student": 1})
  wide = fake_run(tmp_path, "wide", "byol", ["sema_dv"], 64, 4, 5, knn={"student": 60.0}, knn_init={"student": 1})
  config = json.loads((wide / "config.json").read_text())
  config["model"]["student"]["width"] = 16
  write_json(wide / "config.json", config)
  _, rows = report.collect_rows([str(small), str(wide)])
  series = figures.accuracy_series(rows)
  assert series == {
    ("BYOL", "student", "kNN", "ResNet-10 w8"): [(2.0, 50.0)],
    ("BYOL", "student", "kNN", "ResNet-10 w16"): [(4.0, 60.0)],
  }


def test_architecture_names_each_arch_of_a_network_section():
  resnet = {"depth": 18, "width": 64}
  assert report.architecture(resnet) == "ResNet-18 w64"  # a section without `arch` (saved before it) is a ResNet
  assert report.architecture(dict(resnet, arch="resnet", width=None)) == "ResNet-18"
  assert report.architecture(dict(resnet, arch="vit_small", patch_size=8)) == "vit_small patch 8"
  assert report.architecture(dict(resnet, arch="vit_tiny", patch_size=16)) == "vit_tiny patch 16"
  assert report.architecture(dict(resnet, arch="mobilenet_v3_small", patch_size=16)) == "mobilenet_v3_small"
  assert report.architecture(dict(resnet, arch="efficientnet_b0")) == "efficientnet_b0"
  assert report.architecture({"width": 64}) == report.architecture(None) == report_tables.MISSING == "—"


def test_loss_panel_shows_every_curve_and_the_knn_panel_says_what_step_0_is(tmp_path):
  from simdis_jax.evaluation import figures  # pylint: disable=import-outside-toplevel

  metrics = {
    s: {"loss": 4.0 - s / 10, "loss_student": 4.0 - s / 10, **{f"loss_head/{v}": 2.0 for v in ALL_VIEWS}}
    for s in range(1, 6)
  }
  online = {s: {**m, "loss_teacher": 1.0, "loss": m["loss"] + 1.0} for s, m in metrics.items()}
  ax_online = figures.plot_curves(online, "t", 5, str(tmp_path / "o.png")).axes[0]
  colours = [tuple(matplotlib.colors.to_rgba(line.get_color())) for line in ax_online.lines]
  assert len(colours) == 10 and len(set(colours)) == 10  # seven heads, student, teacher, total
  assert [line.get_label() for line in ax_online.lines][-3:] == ["student", "teacher", "total"]
  metrics[0] = {"knn_top1/student": 10.0, "knn_top1/teacher": 80.0}
  fig = figures.plot_curves(metrics, "t", 5, str(tmp_path / "c.png"), frozen_teacher=True)
  ax_loss, ax_knn = fig.axes[:2]
  names = [line.get_label() for line in ax_loss.lines]
  assert names[-2:] == ["student", "total (= student)"] and len(names) == 9
  colours = [tuple(matplotlib.colors.to_rgba(line.get_color())) for line in ax_loss.lines]
  assert len(set(colours)) == len(colours)  # seven heads, student and total: nine colours
  assert ax_loss.get_legend().get_bbox_to_anchor().x0 > ax_loss.get_window_extent().x1 - 1  # beside, not over
  assert "teacher is trained and frozen" in ax_knn.get_title()
  assert [line.get_label() for line in ax_knn.lines] == ["student", "teacher (frozen, trained)"]
  assert "frozen" not in figures.knn_panel_title(False)


def test_plain_text_aligns_tables_and_names_figures():
  markdown = (
    "# Results\n\n| run | views | protocol |\n|---|---|---|\n| a | T̂-v', Ŝ-v | x |\n| bb\\|c | — | y |\n\n"
    "## Figures\n\n![curves_a.png](curves_a.png)\n"
  )
  text = report_tables.plain_text(markdown)
  assert text.splitlines() == [
    "Results",
    "",
    "run   views",
    "----  ---------",
    "a     T̂-v', Ŝ-v",
    "bb|c  —",
    "",
    "Figures",
    "",
    "  curves_a.png",
  ]
