"""The study's command line: flags, then --dry_run, --report_only or the whole study.

    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study \\
        [--dry_run] [--report_only] [--results RESULTS.md] [--figures DIR] [--archive DIR]
"""

import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
CONFIG_NOTE = (
  "A study config (configs/fashion_mnist/study.py, study_long.py) names the presets, seeds, labels "
  "and figures of the study; its docstring describes its keys. Each run's own config keys are "
  "those of `simdis-train --help`."
)


def define_flags() -> None:
  """Defines the study's flags (called once, by the entry module, before absl parses argv)."""
  config_flags.DEFINE_config_file("config", None, "Study config file (configs/*/study.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where the runs' workdirs go: <workdir>/<preset>/seed<seed>.")
  flags.DEFINE_string("results", None, "The report's markdown file (default: config.results).")
  flags.DEFINE_string("figures", None, "Folder of the report's figures (default: config.figures).")
  flags.DEFINE_string(
    "archive",
    None,
    "Folder of the finished runs' records, restored on a fresh machine (default: config.archive; '' = none).",
  )
  flags.DEFINE_bool("report_only", False, "Only write the report from the runs finished so far.")
  flags.DEFINE_bool("dry_run", False, "Print each run's command and whether it is done; run nothing.")
  flags.mark_flags_as_required(["config", "workdir"])


def dry_run(study, workdir: str, archive: str) -> None:
  """Prints each run's state: done, restored from the archive by the study command, or its commands to run."""
  # Imported here, not at the top, so that --help needs only absl and ml_collections.
  from simdis_jax.tools.study.archive import is_archived  # pylint: disable=import-outside-toplevel
  from simdis_jax.tools.study.plan import commands, parse_runs  # pylint: disable=import-outside-toplevel

  for preset, seed in parse_runs(study.runs):
    todo = commands(study, workdir, preset, seed)
    if todo and archive and is_archived(study, archive, preset, seed):
      print(f"[archived] {preset} seed {seed}: restored from {archive} by the study command")
      continue
    if not todo:
      print(f"[done] {preset} seed {seed}")
    for cmd in todo:
      print(f"[to run] {' '.join(cmd)}")


def main(argv) -> None:
  """Runs what the flags ask for (see the module docstring)."""
  del argv
  # pylint: disable=import-outside-toplevel
  from simdis_jax.tools.study.archive import sync_archive
  from simdis_jax.tools.study.plan import parse_runs, preset_config, read_status
  from simdis_jax.tools.study.report import write_study_report
  from simdis_jax.tools.study.runner import run_study

  # pylint: enable=import-outside-toplevel
  study = FLAGS.config
  results = FLAGS.results or study.results
  figures = FLAGS.figures or study.figures
  archive = study.get("archive", "") if FLAGS.archive is None else FLAGS.archive
  config_path = FLAGS["config"].config_filename
  for preset, _ in parse_runs(study.runs):
    preset_config(study, preset)  # a misspelt preset fails now, not hours later
  if FLAGS.dry_run:
    dry_run(study, FLAGS.workdir, archive)
    return
  if FLAGS.report_only:
    sync_archive(study, FLAGS.workdir, archive, read_status(FLAGS.workdir))
    print(write_study_report(study, FLAGS.workdir, results, figures, config_path))
    return
  sys.exit(run_study(study, FLAGS.workdir, results, figures, config_path, archive))
