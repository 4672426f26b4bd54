"""Command line: python -m simdis_jax.report <workdir> [<workdir> ...] --out <dir> (see evaluation/report.py)."""

from simdis_jax.evaluation.report import main, write_report  # noqa: F401  (re-exported for callers)

if __name__ == "__main__":
  raise SystemExit(main())
