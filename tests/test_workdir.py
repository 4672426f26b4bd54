"""simdis_jax/workdir.py: the workdir's files by name, written atomically and read back, metrics lines included."""

import json
import math
import os

import ml_collections
import numpy as np
import pytest

from simdis_jax import workdir as workdir_files


def test_metrics_appends_survive_a_line_cut_by_a_crash(tmp_path):
  workdir = str(tmp_path)
  workdir_files.append_metrics(workdir, 1, {"loss": 1.5})
  with open(tmp_path / workdir_files.METRICS_FILE, "a") as f:
    f.write('{"step": 2, "loss": 1.')  # kill -9 mid-write
  workdir_files.append_metrics(workdir, 3, {"loss": 0.5})
  assert workdir_files.read_metrics(workdir) == {1: {"loss": 1.5}, 3: {"loss": 0.5}}


def test_metrics_read_back_by_step_with_a_later_line_overriding_an_earlier_one(tmp_path):
  workdir = str(tmp_path)
  assert workdir_files.read_metrics(workdir) == {}  # no metrics.jsonl yet
  workdir_files.append_metrics(workdir, 4, {"loss": 2, "lr": 0.5})
  workdir_files.append_metrics(workdir, 2, {"loss": 3.0})
  workdir_files.append_line(workdir, workdir_files.METRICS_FILE, '[1, 2]')  # not a record
  workdir_files.append_line(workdir, workdir_files.METRICS_FILE, '{"loss": 9.0}')  # no step
  workdir_files.append_line(workdir, workdir_files.METRICS_FILE, '{"step": 4, "loss": 1.0, "note": "x"}')  # a resume
  workdir_files.append_metrics(workdir, 3, {"loss": 2.5}, is_main=False)  # only process 0 writes
  metrics = workdir_files.read_metrics(workdir)
  assert metrics == {2: {"loss": 3.0}, 4: {"loss": 1.0, "lr": 0.5}} and list(metrics) == [2, 4]
  first = (tmp_path / workdir_files.METRICS_FILE).read_text().splitlines()[0]
  assert json.loads(first) == {"step": 4, "loss": 2.0, "lr": 0.5}


def test_last_value_is_the_latest_logged_in_the_asked_steps():
  metrics = {1: {"loss": 3.0, "acc": 10.0}, 2: {"loss": float("nan")}, 3: {"acc": 30.0}}
  assert math.isnan(workdir_files.last_value(metrics, "loss"))  # step 2's
  assert workdir_files.last_value(metrics, "loss", finite_only=True) == 3.0
  assert workdir_files.last_value(metrics, "acc") == 30.0
  assert workdir_files.last_value(metrics, "acc", up_to_step=2) == 10.0
  assert workdir_files.last_value(metrics, "acc", up_to_step=2, from_step=2) is None
  assert workdir_files.last_value(metrics, "missing") is None


def test_json_files_are_written_whole_and_a_damaged_one_is_named(tmp_path):
  workdir = str(tmp_path)
  assert workdir_files.read_json(workdir, workdir_files.SUMMARY_FILE) is None
  workdir_files.write_json(workdir, workdir_files.SUMMARY_FILE, {"a": [1, 2]}, indent=2)
  assert (tmp_path / "summary.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}'
  assert workdir_files.read_json(workdir, "summary.json") == {"a": [1, 2]}
  workdir_files.write_json(workdir, workdir_files.RUN_INFO_FILE, {"x": 1}, is_main=False)
  assert os.listdir(tmp_path) == ["summary.json"]  # another process writes nothing, and no temporary file is left
  (tmp_path / "summary.json").write_text('{"a": ')
  with pytest.raises(ValueError) as e:
    workdir_files.read_json(workdir, "summary.json")
  assert str(e.value).startswith(f"{tmp_path / 'summary.json'} is not valid JSON (Expecting value: line 1 column 7")
  assert str(e.value).endswith("); restore it or remove the run's workdir.")


def test_a_config_round_trips_and_a_workdir_without_one_is_named(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    workdir_files.read_config(workdir)
  assert str(e.value) == f"{workdir} holds no config.json: it is not a simdis_jax workdir."
  config = ml_collections.ConfigDict({"task": workdir_files.LINEAR_EVAL_TASK, "train": {"steps": 3}, "views": ("a",)})
  workdir_files.write_config(workdir, config)
  saved = workdir_files.read_config(workdir)
  assert saved == {"task": "linear_eval", "train": {"steps": 3}, "views": ["a"]}
  assert workdir_files.is_linear_eval(saved) and workdir_files.is_linear_eval(config)
  assert not workdir_files.is_linear_eval({"method": "x"}) and not workdir_files.is_linear_eval("linear_eval")


def test_paths_are_made_absolute_except_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert workdir_files.absolute("runs/a") == os.path.join(str(tmp_path), "runs", "a")
  assert workdir_files.absolute("gs://bucket/runs/a") == "gs://bucket/runs/a"
  assert str(workdir_files.path("/w", workdir_files.METRICS_FILE)) == "/w/metrics.jsonl"


def test_software_versions_names_every_versioned_distribution(monkeypatch):
  versions = workdir_files.software_versions()
  assert list(versions) == list(workdir_files.VERSIONED)
  assert versions["numpy"] == np.__version__
  monkeypatch.setattr(workdir_files, "VERSIONED", ("numpy", "no-such-distribution-of-simdis"))
  assert workdir_files.software_versions() == {"numpy": np.__version__, "no-such-distribution-of-simdis": None}
