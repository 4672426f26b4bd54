"""The console scripts: each one's --help prints its flags and exits 0, as the installed command would run it."""

import ast
import importlib
import os
import subprocess
import sys

import pytest

from simdis_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def console_scripts():
  """setup.py's CONSOLE_SCRIPTS {command: "module:function"}, read without running setup.py."""
  tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and node.targets[0].id == "CONSOLE_SCRIPTS":
      return ast.literal_eval(node.value)
  raise AssertionError("setup.py defines no CONSOLE_SCRIPTS")


def start_script(command, target, *args, block=()):
  """Starts `target` as setup.py's console-script wrapper runs it (argv[0] = the command), optionally without
  modules."""
  module, function = target.split(":")
  code = (
    f"import sys; sys.modules.update(dict.fromkeys({list(block)!r})); sys.argv = [{command!r}, *{list(args)!r}]; "
    f"from {module} import {function}; sys.exit({function}())"
  )
  return subprocess.Popen(
    [sys.executable, "-c", code],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )


def finish(proc):
  """(returncode, stdout, stderr) of a started script."""
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def test_every_tool_has_a_console_script_and_each_resolves():
  scripts = console_scripts()
  assert set(scripts) == {
    "simdis-train",
    "simdis-linear",
    "simdis-knn",
    "simdis-export",
    "simdis-import",
    "simdis-report",
    "simdis-study",
    "simdis-benchmark",
    "simdis-zoo",
  }
  for command, target in scripts.items():
    module, function = target.split(":")
    assert callable(getattr(importlib.import_module(module), function)), command


def test_help_of_every_console_script_lists_its_flags_and_exits_0():
  started = {}
  for command, target in console_scripts().items():  # all at once: most of the time is importing
    started[command] = start_script(command, target, "--help")
  out = {}
  for command, proc in started.items():
    code, out[command], err = finish(proc)
    assert code == 0, (command, err[-2000:])
    assert "\nflags:\n  --" in out[command], (command, out[command][:500])
    assert command in out[command], command  # the usage names the command a user types
  # Training's help lists the config keys (the schema's, not a copy) and says where they are explained.
  train = out["simdis-train"]
  assert "README.md" in train and "optim: " in train and "seed_distill: " in train and "moco: " in train
  assert "pretrained: " in out["simdis-linear"]  # the linear-evaluation schema


def test_help_of_report_and_study_needs_no_etils():
  scripts = console_scripts()
  for command, flag in (("simdis-report", "--out"), ("simdis-study", "--workdir")):
    code, out, err = finish(start_script(command, scripts[command], "--help", block=("etils",)))
    assert code == 0 and flag in out, err[-2000:]
  # The same block does stop what needs etils: the check above is not empty.
  code, _, err = finish(
    start_script("simdis-report", scripts["simdis-report"], "/nowhere", "--out=/tmp/x", block=("etils",))
  )
  assert code != 0 and "etils" in err


def test_flag_errors_are_one_message_in_every_style(capsys):
  from simdis_jax.evaluation import knn  # pylint: disable=import-outside-toplevel

  with pytest.raises(SystemExit) as e:
    knn.main(["--workdir", "x", "--k", "20", "200"])  # argparse's spelling of a list
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith("FATAL Flags parsing error: unexpected argument(s) ['200']") and "--k=20,200" in err
  with pytest.raises(SystemExit):
    knn.main(["--workdir", "x", "--k=twenty"])
  assert "--k=twenty: give whole numbers" in capsys.readouterr().err


def test_wants_help_and_config_keys():
  assert cli.wants_help(["--workdir", "x", "--help"]) and cli.wants_help(["-h"]) and cli.wants_help(["--helpfull"])
  assert not cli.wants_help(["--workdir", "--", "--help"]) and not cli.wants_help(["--help=false"])
  import ml_collections  # pylint: disable=import-outside-toplevel

  c = ml_collections.ConfigDict({"seed": 0, "model": {"student": {"depth": 18}, "sync_bn": True}})
  assert cli.config_keys(c) == "  (top level): seed\n  model: student.depth, sync_bn"
