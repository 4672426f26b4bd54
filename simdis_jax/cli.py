"""One command-line style for every tool: absl flags, `--help` that prints and exits 0, one-line flag errors.

Each console script of setup.py (`simdis-train`, `simdis-knn`, ...) calls a function
that ends here, and `python -m simdis_jax.<module>` runs the same function, so both
spellings take the same flags. Tools built on absl's global FLAGS (train, study,
benchmark) parse through `parse_global`; the others keep their flags in a FlagValues
of their own (`parse`), so their `main(argv)` can be called twice in one process
(tests). This module imports only absl: `--help` prints without JAX, etils or
the tool's own code.
"""

import os
import sys
import textwrap
import types
from typing import Callable, List, Optional, Sequence

from absl import flags

HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-?", "--helpfull", "-helpfull")
CONFIG_KEYS_NOTE = (
  "Any key of the config can be overridden with --config.<key>=<value> (e.g. "
  "--config.train.epochs=10); the keys and their defaults are in README.md's "
  "\"Config keys\" table and in each config file's docstring."
)


def wants_help(argv: Sequence[str]) -> bool:
  """Whether argv (without the program name) asks for help, before any '--' that ends the flags."""
  for arg in argv:
    if arg == "--":
      return False
    if arg.split("=", 1)[0] in HELP_FLAGS and not arg.endswith(("=false", "=False", "=0")):
      return True
  return False


def prog_name() -> str:
  """The command's name for messages: argv[0]'s base name (`simdis-knn`, or the module file's under -m)."""
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "simdis_jax"


def print_help(usage: str, flag_help: str, extra: str = "") -> None:
  """Usage text, the flags and an optional note, on stdout."""
  parts = [textwrap.dedent(usage).strip(), "", "flags:", flag_help.rstrip() or "  (none)"]
  if extra:
    parts += ["", extra.rstrip()]
  try:
    print("\n".join(parts), flush=True)
  except BrokenPipeError:  # `--help | head`: the reader has what it wanted
    sys.stderr.close()


def parse(
  define: Callable[[flags.FlagValues], None], argv: Optional[Sequence[str]], usage: str, positional: str = ""
) -> types.SimpleNamespace:
  """The values of `define`'s flags (defined on a fresh FlagValues), parsed from argv (default sys.argv[1:]).

  --help prints `usage` and the flags and exits 0; a bad or missing flag is reported by `fail`.
  `positional` names the positional arguments the tool takes (their values are in `.positional`);
  without it, a positional argument is an error.
  """
  args = list(sys.argv[1:] if argv is None else argv)
  fv = flags.FlagValues()
  define(fv)
  if wants_help(args):
    print_help(usage, tool_flags_help(fv, only_project=False))
    sys.exit(0)
  try:
    rest = fv([prog_name(), *args])[1:]
  except flags.Error as e:
    fail(str(e))
  if rest and not positional:
    fail(
      f"unexpected argument(s) {rest}: every option is a --name=value flag (a list is comma separated, e.g. --k=20,200)"
    )
  if positional and not rest:
    fail(f"give {positional}")
  return types.SimpleNamespace(**fv.flag_values_dict(), positional=rest)


def fail(message: str) -> None:
  """The flag error of every tool, worded as absl's own (exit status 1): what is wrong, then where help is."""
  print(f"FATAL Flags parsing error: {message}\nPass --help to see the flags.", file=sys.stderr)
  sys.exit(1)


def tool_flags_help(fv: flags.FlagValues, only_project: bool = True) -> str:
  """The help of `fv`'s flags, one per line; of the global FLAGS, only this project's (not absl's, orbax's)."""
  lines: List[str] = []
  chosen = []
  for module, module_flags in fv.flags_by_module_dict().items():
    if not only_project or module.startswith("simdis_jax") or module in ("__main__", sys.argv[0]):
      chosen += module_flags
  for flag in sorted(chosen, key=lambda f: f.name):
    text = textwrap.fill(f"--{flag.name}: {flag.help}", 100, initial_indent="  ", subsequent_indent="      ")
    default = f" (default: {flag.default_as_str})" if flag.default is not None else ""
    lines.append(text + default)
  return "\n".join(lines)


def parse_global(argv: Sequence[str], usage: str, extra: Callable[[], str] = lambda: "") -> List[str]:
  """absl's global FLAGS parsed from argv (app.run's flags_parser), with the help and errors of `parse`."""
  if wants_help(argv[1:]):
    print_help(usage, tool_flags_help(flags.FLAGS), extra())
    sys.exit(0)
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(str(e))
  return []  # not reached: fail exits


def config_keys(config, width: int = 100) -> str:
  """The keys of a ConfigDict, one paragraph per section ("  data: name, image_size, ..."), wrapped at `width`."""
  top, sections = [], []
  for key in sorted(config.keys()):
    value = config[key]
    if hasattr(value, "keys"):
      sections.append((key, _leaf_keys(value)))
    else:
      top.append(key)
  lines = [("", top)] + sections
  out = []
  for section, keys in lines:
    out.append(
      textwrap.fill(
        ", ".join(keys), width, initial_indent=f"  {section or '(top level)'}: ", subsequent_indent="      "
      )
    )
  return "\n".join(out)


def _leaf_keys(section, prefix: str = "") -> List[str]:
  """Dotted names of a section's values (nested sections flattened: "student.depth")."""
  keys = []
  for key in sorted(section.keys()):
    value = section[key]
    keys += _leaf_keys(value, f"{prefix}{key}.") if hasattr(value, "keys") else [f"{prefix}{key}"]
  return keys
