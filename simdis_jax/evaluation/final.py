"""After pretraining: linear evaluation of the student (and teacher), then the report.

Driven by config.final_eval of a pretraining config (the demo turns it on):
each network in `linear_networks` gets a linear-evaluation run in
<workdir>/linear_<network>, and the report (results.md + figures) goes to
<workdir>/report.
"""

import logging
import os
from typing import Dict

import jax
import ml_collections

from simdis_jax import configuration
from simdis_jax import workdir as workdir_files
from simdis_jax.data import datasets
from simdis_jax.evaluation import alone, linear, report, report_tables
from simdis_jax.evaluation.linear_config import apply_protocol, base_config


def linear_config(config, workdir: str, network: str) -> ml_collections.ConfigDict:
  """The linear-eval config for one network of a finished pretraining run in `workdir`."""
  fe = config.final_eval
  c = apply_protocol(base_config(), fe.linear_protocol)
  c.mode = fe.linear_mode
  if fe.linear_epochs > 0:
    c.train.epochs = fe.linear_epochs
  c.pretrained.workdir = workdir
  c.pretrained.network = network
  c.train.batch_size = fe.linear_batch_size
  c.data.train_examples = fe.linear_train_examples
  c.data.eval_examples = fe.linear_eval_examples
  c.seed = config.seed
  return c


def evaluate_after_pretraining(config, workdir: str) -> Dict[str, Dict]:
  """Trains the student alone if asked, runs the linear evaluations, writes the report; returns the linear results."""
  fe = config.final_eval
  results, dirs = {}, [workdir]
  student_alone = fe.get("student_alone", False)
  if student_alone:  # the same student pretrained without the teacher, in <workdir>/alone
    alone.train_alone(config, workdir)
    dirs.append(os.path.join(workdir, alone.ALONE_DIR))
  networks = [n for n in fe.linear_networks if n == "student" or configuration.uses_teacher(config)]
  for network in networks:
    out = os.path.join(workdir, f"linear_{network}")
    results[network] = linear.run(linear_config(config, workdir, network), out)
    dirs.append(out)
  if student_alone and "student" in networks:
    alone_dir = os.path.join(workdir, alone.ALONE_DIR)
    out = os.path.join(alone_dir, "linear_student")
    linear.run(linear_config(config, alone_dir, "student"), out)
    dirs.append(out)
  if fe.report and jax.process_index() == 0:
    markdown = report.write_report(dirs, os.path.join(workdir, "report"))
    # The console gets plain text; the markdown (with its figure links) is in <workdir>/report/results.md.
    print(report_tables.plain_text(markdown), flush=True)
    if not student_alone:
      print(report_tables.plain_text(what_the_numbers_mean(config, workdir, results)), flush=True)
    print(f"The report, with its figures: {os.path.join(workdir, 'report', report.RESULTS_MD)}", flush=True)
    logging.info("Report written to %s.", os.path.join(workdir, "report"))
  if student_alone and jax.process_index() == 0:
    print(alone.table(config, workdir, results, alone.raw_pixel_knn(config)), flush=True)
  return results


def what_the_numbers_mean(config, workdir: str, linear_results: Dict[str, Dict]) -> str:
  """A small table: each network's final kNN and linear top-1 beside the raw-pixel baselines (if known)."""
  summary = workdir_files.read_json(workdir, workdir_files.SUMMARY_FILE) or {}
  rows = ["| network | kNN top-1 | linear top-1 |", "|---|---|---|"]
  for network in ("student", "teacher"):
    knn_top1, lin = summary.get(f"knn_top1/{network}"), linear_results.get(network, {}).get("top1")
    if knn_top1 is not None or lin is not None:
      rows.append(f"| {network} | {_cell(knn_top1)} | {_cell(lin)} |")
  # The dataset's raw-pixel references on this run's held-out split, measured by their command (data/datasets.py):
  # computing them here would cost a run more than its own evaluations (the linear evaluation takes minutes).
  holdout = config.data.get("holdout", "none")
  ref = datasets.get(config.data.name).raw_pixels.get(holdout)
  if ref:
    command = datasets.RAW_PIXELS_COMMAND.format(holdout=holdout)
    rows.append(f"| raw pixels, no training ({command}) | {_cell(ref['knn'])} | {_cell(ref['linear'])} |")
  return "\n".join(["", f"What the numbers mean ({config.data.name} test top-1, %):", *rows])


def _cell(value) -> str:
  return "-" if value is None else f"{value:.1f}"
