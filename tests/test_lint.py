"""The repository passes `ruff check` under the project's rules (ruff.toml: E, W, F at 120 columns)."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_is_clean():
  if importlib.util.find_spec("ruff") is None:
    pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
  result = subprocess.run(
    [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
