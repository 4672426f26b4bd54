"""python -m simdis_jax.zoo: the shipped networks, their measured top-1 and size (--json: the manifest)."""

import argparse
import json
import sys

from simdis_jax import zoo


def main(argv=None) -> int:
  """Prints the zoo's table (or its manifest as JSON)."""
  parser = argparse.ArgumentParser(prog="python -m simdis_jax.zoo",
                                   description="List the networks shipped with simdis_jax; load one by name: "
                                   "simdis_jax.load_encoder(NAME), --config.teacher.workdir=NAME, "
                                   "export --workdir NAME.")
  parser.add_argument("--json", action="store_true", help="print the manifest (files, sha256, records) as JSON")
  args = parser.parse_args(argv)
  print(json.dumps(zoo.manifest(), indent=2) if args.json else zoo.table())
  return 0


if __name__ == "__main__":
  sys.exit(main())
