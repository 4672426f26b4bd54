"""The repository passes `ruff check` under the project's rules (ruff.toml: E, W, F at 120 columns) and is as
`ruff format` writes it (ruff.toml's [format])."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ruff(*args):
  """`python -m ruff <args> --no-cache .` in the repository root (skipped where ruff is not installed)."""
  if importlib.util.find_spec("ruff") is None:
    pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
  command = [sys.executable, "-m", "ruff", *args, "--no-cache", "."]
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check_is_clean():
  result = ruff("check")
  assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


def test_ruff_format_leaves_every_file_as_it_is():
  result = ruff("format", "--check")
  assert result.returncode == 0, (
    f"ruff format would change files (run `ruff format .`):\n{result.stdout}{result.stderr}"
  )
  assert re.search(r"^[1-9]\d* files already formatted$", result.stdout, re.M), result.stdout  # it saw the files
