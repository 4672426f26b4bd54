"""Command line: python -m simdis_jax.main --config configs/<experiment>.py --workdir <dir>.

Pretraining configs run `train.train_and_evaluate`; configs with task="linear_eval"
(configs/*/linear_eval.py) run `evaluation.linear.run`. On several hosts the
same command runs on every host (launch/README.md); a run stopped by a
preemption notice saves a checkpoint and exits with status 143, and the same
command resumes it.
"""

import logging as stdlib_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go; a run resumes from it.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 (auto-detected on TPU pods/SLURM).")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_enum("distributed", "auto", ["auto", "yes", "no"],
                  "Start jax.distributed: auto = when the flags above are given or a SLURM job of several "
                  "tasks / TPU pod is detected; yes = always (let jax detect the cluster); no = never.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(stdlib_logging.Filter):
  """Drops INFO chatter of orbax/absl-internal modules; warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= stdlib_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  from simdis_jax import checkpoint, parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                  FLAGS.distributed)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # one host's log tells the story; others report only problems
  logging.info("JAX process %d of %d, %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  try:
    if FLAGS.config.get("task") == "linear_eval":
      from simdis_jax.evaluation import linear  # pylint: disable=g-import-not-at-top
      linear.run(FLAGS.config, FLAGS.workdir)
    else:
      from simdis_jax import train  # pylint: disable=g-import-not-at-top
      from simdis_jax.evaluation import final  # pylint: disable=g-import-not-at-top
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
      if FLAGS.config.final_eval.linear_networks or FLAGS.config.final_eval.report:
        final.evaluate_after_pretraining(FLAGS.config, FLAGS.workdir)
  except checkpoint.Preempted as e:  # pretraining or linear evaluation saved its state and stopped
    logging.warning("%s", e)
    sys.exit(checkpoint.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
