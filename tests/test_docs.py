"""The documentation stands alone and matches the code: README's config-key table is the schema, nothing points
outside."""

import ast
import os
import re

from simdis_jax import configuration, methods, workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "workdirs", ".benchmarks", "build", ".eggs"}
# Written in two pieces so that this file does not match itself.
OUTSIDE = ("SPEC" + ".md", "../" + "shared")


def readme_section(title):
  """The text of README.md's section `## <title>` (up to the next `## `)."""
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  start = text.index(f"\n## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start : end if end > 0 else None]


def table_keys(section):
  """{key: meaning} of the table's rows; a row's first cell may name several `keys`."""
  rows = {}
  for line in section.splitlines():
    if line.startswith("| `"):
      first, meaning = line.split(" | ", 1)
      for key in re.findall(r"`([^`]+)`", first):
        rows[key] = meaning
  return rows


def schema_keys(config, prefix=""):
  """Dotted names of every value of a ConfigDict (sections flattened)."""
  keys = []
  for key in config.keys():
    value = config[key]
    keys += schema_keys(value, f"{prefix}{key}.") if hasattr(value, "keys") else [f"{prefix}{key}"]
  return keys


def covered(key, table):
  """Whether a schema key has a row: its own, `model.<net>.<x>` for both networks, or a `section.*` row."""
  if key in table:
    return True
  parts = key.split(".")
  if parts[0] == "model" and len(parts) == 3 and parts[1] in ("student", "teacher"):
    return f"model.<net>.{parts[2]}" in table
  return any(".".join(parts[:i]) + ".*" in table for i in range(1, len(parts)))


def test_readme_config_table_is_the_schema():
  table = table_keys(readme_section("Config keys"))
  schema = schema_keys(configuration.base_config())
  assert len(schema) > 80  # the walk found the schema, not an empty dict
  missing = [k for k in schema if not covered(k, table)]
  assert not missing, f"keys of configuration.base_config() without a row in README's table: {missing}"
  expanded = {k.replace("<net>", net) for k in table for net in ("student", "teacher")}
  stale = [k for k in expanded if not k.endswith(".*") and k not in schema]
  stale += [k for k in table if k.endswith(".*") and not any(s.startswith(k[:-1]) for s in schema)]
  assert not stale, f"README's table names keys the schema does not have: {stale}"
  # Every value of `method` is described in its row.
  assert set(re.findall(r"`([a-z_0-9]+)`", table["method"])) >= set(methods.METHODS)


def test_no_file_refers_outside_the_repository():
  found = []
  for folder, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
    for name in files:
      path = os.path.join(folder, name)
      if os.path.getsize(path) > 20_000_000:
        continue
      with open(path, "rb") as f:
        data = f.read()
      found += [f"{os.path.relpath(path, ROOT)}: {ref}" for ref in OUTSIDE if ref.encode() in data]
  assert not found, found


def test_no_issue_numbers_in_code():
  found = []
  for folder, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and d != "results" and not d.endswith(".egg-info")]
    for name in files:
      if name.endswith((".py", ".sh")):
        path = os.path.join(folder, name)
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
          if re.search(r"\bissue\s*#?\d|#\d{1,3}\b", line, re.IGNORECASE) and "re.search" not in line:
            found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
  assert not found, found


def test_run_info_versions_come_from_the_installed_distributions():
  versions = workdir.software_versions()
  assert set(versions) >= {"simdis_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"}
  import jax  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel

  assert versions["jax"] == jax.__version__ and versions["flax"] == flax.__version__


def design_modules():
  """The package modules docs/design.md's module table names (first cells, paths under simdis_jax/)."""
  text = open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8").read()
  section = text[text.index("\n## Modules\n") : text.index("\n## ", text.index("\n## Modules\n") + 1)]
  return {
    name
    for line in section.splitlines()
    if line.startswith("| `")
    for name in re.findall(r"`([\w/]+\.py)`", line.split(" | ", 1)[0])
  }


def package_modules():
  """Every .py file under simdis_jax/, but a package's __init__.py that holds only its docstring."""
  found = set()
  for folder, dirs, files in os.walk(os.path.join(ROOT, "simdis_jax")):
    dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
    for name in files:
      path = os.path.join(folder, name)
      if name.endswith(".py") and not (name == "__init__.py" and only_docstring(path)):
        found.add(os.path.relpath(path, os.path.join(ROOT, "simdis_jax")).replace(os.sep, "/"))
  return found


def only_docstring(path):
  body = ast.parse(open(path, encoding="utf-8").read()).body
  return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def test_design_names_every_module_of_the_package_and_no_other():
  named, package = design_modules(), package_modules()
  assert len(package) > 80 and "models/archs.py" in package and "data/__init__.py" not in package
  assert not package - named, f"modules docs/design.md's table does not name: {sorted(package - named)}"
  missing = sorted(n for n in named if not os.path.isfile(os.path.join(ROOT, "simdis_jax", n)))
  assert not missing, f"docs/design.md names modules that do not exist: {missing}"
