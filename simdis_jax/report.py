"""The results report (console script simdis-report): a table, training curves and embedding maps of runs.

    simdis-report <workdir> [<workdir> ...] --out <dir> [--noembeddings] [--embedding_points=2000]
    python -m simdis_jax.report ...      (the same command)

Give pretraining workdirs, linear-evaluation workdirs, or both, in any order: a
pretraining workdir brings its own linear evaluations (<workdir>/linear_<network>,
as final_eval writes them), and a linear evaluation brings the run it evaluated.
Writes <out>/results.md (the table, what its columns mean, the figures),
results.json (every value) and PNG figures: curves_<run>.png (losses, kNN),
accuracy_vs_epochs.png, and embedding_<run>.png (t-SNE of the held-out split's
features, coloured by class; needs JAX, scikit-learn and the runs' checkpoints).
The console gets the table as plain text. The report itself is
simdis_jax/evaluation/report.py.
"""

import os
import sys
from typing import Optional, Sequence

from simdis_jax import cli


def define_flags(fv) -> None:
  """The report's flags, on the FlagValues `fv` (absl only: --help needs nothing else)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string(
    "out", None, "Directory for results.md, results.json and the PNG figures.", flag_values=fv, required=True
  )
  flags.DEFINE_bool(
    "embeddings", True, "Draw each finished run's embedding map (reads its checkpoint).", flag_values=fv
  )
  flags.DEFINE_integer("embedding_points", 2000, "Held-out images per embedding map.", lower_bound=1, flag_values=fv)


def write_report(*args, **kwargs) -> str:
  """evaluation.report.write_report (kept here for callers of simdis_jax.report.write_report)."""
  from simdis_jax.evaluation import report  # pylint: disable=import-outside-toplevel

  return report.write_report(*args, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line (the module docstring); argv without the program name, default sys.argv[1:]."""
  args = cli.parse(define_flags, argv, __doc__, positional="one or more workdirs")
  from simdis_jax.evaluation import report, report_tables  # pylint: disable=import-outside-toplevel

  try:
    markdown = report.write_report(args.positional, args.out, args.embeddings, args.embedding_points)
  except ValueError as e:
    raise SystemExit(f"simdis_jax.report: error: {e}") from e
  print(report_tables.plain_text(markdown), end="")
  print(
    f"\nWrote {os.path.join(args.out, report.RESULTS_MD)}, {report.RESULTS_JSON} and figures to {args.out}.",
    file=sys.stderr,
  )
  return 0


def run() -> None:
  """Console script simdis-report."""
  sys.exit(main())


if __name__ == "__main__":
  run()
