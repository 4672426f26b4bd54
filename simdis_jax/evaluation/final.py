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
from simdis_jax.evaluation import linear, report
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
  """Runs the configured linear evaluations and writes the report; returns the linear results."""
  fe = config.final_eval
  results, dirs = {}, [workdir]
  networks = [n for n in fe.linear_networks if n == "student" or configuration.uses_teacher(config)]
  for network in networks:
    out = os.path.join(workdir, f"linear_{network}")
    results[network] = linear.run(linear_config(config, workdir, network), out)
    dirs.append(out)
  if fe.report and jax.process_index() == 0:
    markdown = report.write_report(dirs, os.path.join(workdir, "report"))
    print(markdown, flush=True)
    logging.info("Report written to %s.", os.path.join(workdir, "report"))
  return results
