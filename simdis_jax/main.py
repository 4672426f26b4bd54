"""Pretraining and linear evaluation from a config file (console scripts simdis-train and simdis-linear).

    simdis-train --config configs/demo.py --workdir workdirs/demo
    simdis-linear --config configs/fashion_mnist/linear_eval.py --workdir <dir> \\
        --config.pretrained.workdir=<pretraining workdir>
    python -m simdis_jax.main ...      (the same command as simdis-train)

Pretraining configs run `train.train_and_evaluate`; configs with task="linear_eval"
(configs/*/linear_eval.py) run `evaluation.linear.run`. On several hosts the
same command runs on every host (launch/README.md); a run stopped by a
preemption notice saves a checkpoint and exits with status 143, and the same
command resumes it.
"""

import logging as stdlib_logging
import os
import sys
import textwrap
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines (oneDNN notices), before any import

from absl import app, flags, logging  # noqa: E402  pylint: disable=wrong-import-position
from ml_collections import config_flags  # noqa: E402  pylint: disable=wrong-import-position

from simdis_jax import cli, config_files  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and logs go; a run resumes from it.")
flags.DEFINE_string(
  "coordinator_address", None, "Multi-host: host:port of process 0 (auto-detected on TPU pods/SLURM)."
)
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "yes", "no"],
  "Start jax.distributed: auto = when the flags above are given or a SLURM job of several "
  "tasks / TPU pod is detected; yes = always (let jax detect the cluster); no = never.",
)
flags.DEFINE_bool(
  "verbose", False, "Show the full traceback of an error on the console (it is always in <workdir>/log.txt)."
)
flags.mark_flags_as_required(["config", "workdir"])
flags.register_validator(
  "workdir",
  lambda w: w is None or bool(w.strip()),
  "--workdir is empty (an unset shell variable?): give the directory for checkpoints and logs.",
)
# Errors a user can fix from the message alone: printed as one line (the traceback goes to the log file).
USER_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError, KeyError)


def _load_config(argv):
  """The ConfigDict that --config names in argv (None if none), loaded as config_flags does."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  if spec is None:
    return None
  return config_files.load_config(spec)


def unknown_config_key(argv) -> str:
  """One line naming the first --config.<key> override in argv that the config lacks, with the valid keys; ''
  if none."""
  try:
    config = _load_config(argv)
  except Exception:  # pylint: disable=broad-except  (the config itself is broken: absl's own error stands)
    return ""
  if config is None:
    return ""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config.") :].split("=", 1)[0]
    section, prefix = config, "config"
    for part in key.split("."):
      keys = list(section.keys()) if hasattr(section, "keys") else []
      if part not in keys:
        valid = ", ".join(sorted(keys)) if keys else f"none ({prefix} is a value, not a section)"
        return f"--config.{key}: {prefix} has no key {part!r}. Valid keys of {prefix}: {valid}."
      section, prefix = section[part], f"{prefix}.{part}"
  return ""


def config_keys_help() -> str:
  """What --help says about config keys: where they are documented, and the keys of the schema."""
  try:
    if _TASK == "linear_eval":
      from simdis_jax.evaluation.linear_config import base_config  # pylint: disable=g-import-not-at-top
    else:
      from simdis_jax.configuration import base_config  # pylint: disable=g-import-not-at-top
    keys = cli.config_keys(base_config())
  except ImportError as e:  # --help still prints without the training libraries
    keys = f"(the key list needs the training libraries: {e})"
  note = (
    cli.CONFIG_KEYS_NOTE
    if _TASK != "linear_eval"
    else (
      "Any key of the config can be overridden with --config.<key>=<value> (e.g. "
      "--config.pretrained.workdir=workdirs/demo); simdis_jax/evaluation/linear_config.py gives each key's "
      "default and explains the protocols and modes."
    )
  )
  return f"{textwrap.fill(note, 100)}\n\nconfig keys (--config.<key>=<value>):\n{keys}"


def parse_flags(argv):
  """absl's flag parsing, with an unknown --config.<key> reported as one line instead of a traceback."""
  if cli.wants_help(argv[1:]):
    return cli.parse_global(argv, __doc__, config_keys_help)
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError):
    message = unknown_config_key(argv)
    if not message:
      raise
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    sys.exit(1)
  except flags.Error as e:
    cli.fail(str(e))
  return []  # not reached: cli.fail exits


class _QuietLibraries(stdlib_logging.Filter):
  """Drops INFO chatter of orbax/absl-internal modules; warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= stdlib_logging.WARNING or "orbax" not in record.pathname


def _run(config, workdir: str) -> None:
  """Pretraining (+ its final evaluation), or a linear evaluation for configs with task="linear_eval"."""
  if config.get("task") == "linear_eval":
    from simdis_jax.evaluation import linear  # pylint: disable=g-import-not-at-top

    linear.run(config, workdir)
  else:
    from simdis_jax import train  # pylint: disable=g-import-not-at-top
    from simdis_jax.evaluation import final  # pylint: disable=g-import-not-at-top

    train.train_and_evaluate(config, workdir)
    fe = config.final_eval
    if fe.linear_networks or fe.report or fe.get("student_alone", False):
      final.evaluate_after_pretraining(config, workdir)


# "linear_eval" when started as simdis-linear: the config must then be a linear evaluation's.
_TASK = None


def main(argv):
  del argv
  if _TASK and FLAGS.config.get("task") != _TASK:
    cli.fail(
      f"--config {FLAGS['config'].config_filename} is a pretraining config; simdis-linear takes a "
      "linear-evaluation config (configs/*/linear_eval.py). Pretrain with simdis-train."
    )
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  from simdis_jax import console, lock, parallel, preemption  # pylint: disable=g-import-not-at-top
  from simdis_jax import workdir as workdir_files  # pylint: disable=g-import-not-at-top

  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed)
  log_file = None
  if not FLAGS["verbosity"].present and "://" not in FLAGS.workdir:  # --verbosity keeps absl's log on stderr
    log_file = console.setup(FLAGS.workdir, jax.process_index())
    console.import_tensorflow_quietly(log_file)
    console.say(
      f"simdis_jax: {FLAGS.config.get('method', FLAGS.config.get('task'))} run in {FLAGS.workdir} "
      f"(full log: {log_file}; --verbosity=0 shows it here)"
    )
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # one host's log tells the story; others report only problems
  logging.info(
    "JAX process %d of %d, %d local / %d global devices (%s).",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  try:
    # One run per workdir, from start to the end of the final evaluation (train_and_evaluate re-enters it).
    with lock.held(workdir_files.absolute(FLAGS.workdir)):
      _run(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as e:  # pretraining or linear evaluation saved its state and stopped
    logging.warning("%s", e)
    sys.exit(preemption.PREEMPTED_EXIT_CODE)
  except USER_ERRORS as e:
    if FLAGS.verbose:
      raise
    logging.error("%s", traceback.format_exc(), extra=console.FILE_ONLY)  # the whole story, in the log file
    console.Progress.clear()
    where = f"full traceback in {log_file}" if log_file else "full traceback above"
    print(f"simdis_jax: {type(e).__name__}: {e}\n({where}; add --verbose to see it here)", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:  # a second Ctrl-C, or one outside training (which saves on the first)
    console.Progress.clear()
    print("simdis_jax: interrupted.", file=sys.stderr)
    sys.exit(130)


def run() -> None:
  """Console script simdis-train (and `python -m simdis_jax.main`): pretraining, or a linear_eval config."""
  app.run(main, flags_parser=parse_flags)


def run_linear() -> None:
  """Console script simdis-linear: a linear evaluation of a pretraining run (a configs/*/linear_eval.py config)."""
  global _TASK  # pylint: disable=global-statement
  _TASK = "linear_eval"
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
