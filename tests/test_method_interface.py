"""The method interface: method knowledge stays in simdis_jax/methods/, the registry, the per-method state."""

import ast
import os
import pathlib

import flax
import jax
import numpy as np
import pytest

from simdis_jax import checkpoint, configuration, methods
from simdis_jax.methods import interface
from test_moco_seed import (
  BATCH,
  TrainStateBeforeQueues,
  assert_next_step_is_the_same,
  build,
  moco_config,
  save_and_restore,
)
from test_step import host, images

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "simdis_jax"

# Where a registry name may stand as a string outside methods/, and why it is not the method there.
NOT_THE_METHOD = {
  # The projector kind "byol" (Linear-BN-ReLU-Linear; models/heads.PROJECTORS), a value saved configs hold.
  "models/heads.py": {"byol"},
  "models/network.py": {"byol"},
  "configuration.py": {"byol"},
  "models/archs.py": {"byol"},
  "runs.py": {"byol"},
  # The config key `seed` (the random seed) among the keys a resumed run must keep.
  "resume.py": {"seed"},
}
# Folders whose modules are plans of named runs, like configs/: the study's presets and the peer benchmark
# of the authors' PyTorch code, which implements exactly the methods it names.
PLANS = ("tools/study", "tools/benchmark/peer.py")


def method_name_strings(path: pathlib.Path):
  """(line, string) of every string literal in `path` equal to a registry method name, leaving out config keys
  (dict keys, subscripts and .get/.pop/.setdefault arguments: config.get("seed") is the random seed)."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  keys = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Dict):
      keys |= {id(k) for k in node.keys if k is not None}
    elif isinstance(node, ast.Subscript):
      keys.add(id(node.slice))
    elif (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and node.func.attr in ("get", "pop", "setdefault")
      and node.args
    ):
      keys.add(id(node.args[0]))
  return [
    (node.lineno, node.value)
    for node in ast.walk(tree)
    if isinstance(node, ast.Constant) and node.value in methods.METHODS and id(node) not in keys
  ]


def test_no_module_outside_methods_names_a_method():
  found, scanned = [], 0
  for path in sorted(PACKAGE.rglob("*.py")):
    relative = path.relative_to(PACKAGE).as_posix()
    if relative.startswith("methods/") or relative.startswith(PLANS):
      continue
    scanned += 1
    found += [
      f"{relative}:{line}: {value!r}"
      for line, value in method_name_strings(path)
      if value not in NOT_THE_METHOD.get(relative, ())
    ]
  assert scanned > 60  # the whole package outside methods/ was read
  assert not found, "method names outside simdis_jax/methods/ (ask the registry instead):\n" + "\n".join(found)


def test_the_scan_finds_a_method_named_in_code(tmp_path):
  module = tmp_path / "m.py"
  module.write_text('if config.method == "moco_v2" or run.get("seed"):\n  x = {"seed": 1}["seed"]\n')
  assert method_name_strings(module) == [(1, "moco_v2")]


def test_every_method_module_provides_the_interface():
  assert set(methods.METHODS) == {name for m in methods.modules() for name in m.ABOUT}
  for module in methods.modules():
    for function in ("online_networks", "forwards", "loss", "before_update", "after_update"):
      assert callable(getattr(module, function)), (module.__name__, function)
    for name, about in module.ABOUT.items():
      assert isinstance(about, interface.About) and about.teacher in interface.TEACHER_KINDS
  labels = [methods.about(m).label for m in methods.METHODS]
  assert len(set(labels)) == len(labels)
  assert [methods.about(m).order for m in methods.METHODS] == sorted(methods.about(m).order for m in methods.METHODS)
  # Methods import shared pieces from methods/common.py, never from a sibling method module.
  names = {m.__name__.rsplit(".", 1)[1] for m in methods.modules()}
  for module in methods.modules():
    tree = ast.parse(pathlib.Path(module.__file__).read_text(encoding="utf-8"))
    imported = {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not (imported & names) - {module.__name__.rsplit(".", 1)[1]}, module.__name__


def test_the_base_config_holds_each_methods_section():
  c = configuration.base_config()
  assert c.method == "simdis_on"
  assert c.moco.queue_size == 65_536 and c.seed_distill.teacher_temperature == 1e-4 and c.supervised.views == 2
  assert c.views == configuration.VIEW_PRESETS["simdis_7v"] and c.head_combination == "mean"
  rows = {r.key for r in configuration.RULES}
  assert {"head_combination", "moco.temperature", "seed_distill.queue_size", "supervised.views"} <= rows
  c.moco.temperature = 0.0
  with pytest.raises(ValueError, match=r"config.moco.temperature=0.0 is out of range.*MoCo-v2 uses 0.2"):
    configuration.validate(c)


@flax.struct.dataclass
class TrainStateWithQueue(TrainStateBeforeQueues):
  """TrainState as it was when MoCo-v2's and SEED's state was the field `queue` (the tree their checkpoints hold)."""

  queue: object = None


def test_a_moco_checkpoint_written_with_the_queue_field_restores_into_method_state(tmp_path):
  c = moco_config(shuffle_bn=True, queue=2 * BATCH)
  mesh, _, create, state, step = build(c, devices=2)
  for i in range(2):
    state, _ = step(state, *images(mesh, BATCH, seed=i))
  old = TrainStateWithQueue(
    state.step,
    state.rng,
    state.student,
    state.teacher,
    state.opt_state,
    state.probe,
    state.probe_opt_state,
    state.method_state,
  )
  restored = save_and_restore(str(tmp_path), 2, old, create, mesh)  # the checksums name the old tree's arrays
  assert "queue/queue" in open(os.path.join(tmp_path, checkpoint.CHECKSUM_DIR, "2.json")).read()
  assert type(restored).__name__ == "TrainState" and set(restored.method_state) == {"queue", "ptr"}
  np.testing.assert_array_equal(host(restored.method_state["queue"]), host(state.method_state["queue"]))
  assert int(restored.method_state["ptr"]) == int(state.method_state["ptr"]) == 0  # 2 batches of 16 in 32 slots
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(host(a), host(b))
  assert_next_step_is_the_same(step, mesh, state, restored)
