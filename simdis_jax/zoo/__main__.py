"""python -m simdis_jax.zoo (simdis-zoo): the shipped networks, their measured top-1 and size (--json: the manifest)."""

import json
import sys
from typing import Optional, Sequence

USAGE = """\
simdis-zoo [--json]

List the networks shipped with simdis_jax, with their measured kNN / linear top-1 and size. Load one by
name: simdis_jax.load_encoder(NAME), --config.teacher.workdir=NAME (SimDis-Off, SEED), or
simdis-export --workdir=NAME.
"""


def define_flags(fv) -> None:
  """The zoo command's flags, on the FlagValues `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_bool("json", False, "Print the manifest (files, sha256, records) as JSON.", flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Prints the zoo's table (or its manifest as JSON)."""
  from simdis_jax import cli, zoo  # pylint: disable=import-outside-toplevel

  args = cli.parse(define_flags, argv, USAGE)
  print(json.dumps(zoo.manifest(), indent=2) if args.json else zoo.table())
  return 0


if __name__ == "__main__":
  sys.exit(main())
