"""The method interface and the method options' behaviour: EMA timing, EMA init, the offline teacher's BN mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from test_step import IMAGE_SHAPE, assert_trees_equal, build, host, images
from simdis_jax import methods, step as step_lib
from simdis_jax.methods import moco_v2, seed, simclr, simdis, simsiam, supervised
from simdis_jax.methods.interface import Forward
from simdis_jax.state import trainable_networks


def test_registry_names_every_method_and_rejects_others():
  assert methods.METHODS == ("byol", "simdis_off", "simdis_on", "supervised", "moco_v2", "seed", "simclr", "simsiam")
  assert [methods.get(m) for m in methods.METHODS] == [
    simdis,
    simdis,
    simdis,
    supervised,
    moco_v2,
    seed,
    simclr,
    simsiam,
  ]
  with pytest.raises(ValueError, match="Unknown method 'moco'; choose one of"):
    methods.get("moco")


def test_forwards_say_which_networks_run_in_which_bn_mode():
  on = {f.network: f for f in simdis.forwards(tiny_config("simdis_on", "simdis_2v"))}
  assert list(on) == ["student", "student_ema", "teacher", "teacher_ema"]
  assert (on["teacher"].trainable, on["teacher"].bn, on["teacher"].update_stats) == (True, "train", True)
  assert (on["teacher_ema"].trainable, on["teacher_ema"].update_stats) == (False, True)
  c = tiny_config("simdis_off", "table2_t_sv")
  c.teacher.bn_mode = "eval"
  off = {f.network: f for f in simdis.forwards(c)}
  assert list(off) == ["student", "student_ema", "teacher"]  # T̂ is not a target of these views
  assert (off["teacher"].trainable, off["teacher"].bn, off["teacher"].update_stats) == (False, "eval", False)
  assert trainable_networks(c) == ("student",) and trainable_networks(tiny_config("simdis_on")) == (
    "student",
    "teacher",
  )
  with pytest.raises(ValueError, match="EMA networks are never trainable"):
    Forward("student_ema", trainable=True, bn="train", update_stats=True)
  with pytest.raises(ValueError, match="update_stats needs bn='train'"):
    Forward("teacher", trainable=False, bn="eval", update_stats=True)


def test_ema_after_the_update_mixes_in_the_new_weights():
  c = tiny_config("byol", "byol")
  c.ema.base = 0.5  # τ_0 = 0.5: both products are exact, so the expected EMA is bit-exact
  c.ema.timing = "after"
  mesh, _, _, state, train_step = build(c, total_steps=4)
  online0, ema0 = host(state.student.params), host(state.student.ema_params)
  state1, metrics = train_step(state, *images(mesh))
  assert float(metrics["tau"]) == 0.5
  online1, ema1 = host(state1.student.params), host(state1.student.ema_params)
  expected = jax.tree.map(lambda e, o: np.float32(0.5) * e + np.float32(0.5) * o, ema0, {k: online1[k] for k in ema0})
  assert_trees_equal(ema1, expected)
  # The authors' "before" form mixes in the pre-update weights: with a copied EMA it leaves the copy as it was.
  before_form = jax.tree.map(
    lambda e, o: np.float32(0.5) * e + np.float32(0.5) * o, ema0, {k: online0[k] for k in ema0}
  )
  assert_trees_equal(before_form, ema0)
  kernel = ("encoder", "stem_conv", "kernel")
  moved = ema1[kernel[0]][kernel[1]][kernel[2]] - ema0[kernel[0]][kernel[1]][kernel[2]]
  assert np.abs(moved).max() > 0


@pytest.mark.parametrize("ema_init", ["copy", "separate"])
def test_ema_init_copies_the_online_net_or_is_an_independent_init(ema_init):
  c = tiny_config("byol", "byol")
  c.model.ema_init = ema_init
  _, nets, _, state, _ = build(c)
  online, ema = host(state.student.params), host(state.student.ema_params)
  online_subtree = {k: online[k] for k in ema}
  if ema_init == "copy":
    assert_trees_equal(ema, online_subtree)
    return
  # create_train_state's keys: the student's key splits into the online and the EMA net's init keys.
  student_rng = jax.random.split(jax.random.PRNGKey(c.seed), 3)[0]
  ema_rng = jax.random.split(student_rng)[1]
  independent = host(nets.student_ema.init(ema_rng, jnp.zeros((2,) + IMAGE_SHAPE), train=False)["params"])
  # Equal up to the last bit of float32 (the state is initialised in one jitted program, this eagerly).
  assert jax.tree.structure(ema) == jax.tree.structure(independent)
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(independent)):
    np.testing.assert_allclose(a, b, rtol=2e-7, atol=1e-8)
  kernels = [
    (a, b)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ema), jax.tree.leaves(online_subtree))
    if "kernel" in jax.tree_util.keystr(path)
  ]
  assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


def _random_running_stats(batch_stats, seed):
  """BN running statistics far from init (mean 0, var 1), so that eval-mode outputs differ visibly."""
  leaves, tree = jax.tree.flatten(batch_stats)
  rng = np.random.default_rng(seed)
  # Leaves alternate mean, var in sorted key order; positive values keep every variance valid.
  return jax.tree.unflatten(tree, [jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32) for x in leaves])


def test_offline_teacher_in_eval_mode_uses_its_running_statistics():
  c = tiny_config("simdis_off", "table2_t_sv_t_dv")  # targets of the online teacher only
  c.teacher.bn_mode = "eval"
  c.model.sync_bn = False  # lets loss_fn run outside shard_map
  mesh, nets, _, state, train_step = build(c)
  teacher = state.teacher.replace(batch_stats=_random_running_stats(state.teacher.batch_stats, 0))
  state = state.replace(teacher=teacher)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8,) + IMAGE_SHAPE), jnp.float32)
  params = {"student": state.student.params}
  _, (metrics, stats, outputs) = step_lib.loss_fn(params, state, x, x[::-1], networks=nets, config=c)
  variables = {"params": teacher.params, "batch_stats": teacher.batch_stats}
  evaluated = nets.teacher.apply(variables, x, train=False)["projection"]
  batch_mode, _ = nets.teacher.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(outputs["teacher"][0]["projection"], evaluated, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(evaluated) - np.asarray(batch_mode["projection"])).max() > 0.1
  assert "teacher" not in stats  # nothing to keep: the running statistics are only read
  # T-v: the student's head predicts the teacher's eval-mode projection of the same view.
  s = outputs["student"]
  expected = simdis.head_loss(
    s[0]["predictions"]["t_sv"],
    s[1]["predictions"]["t_sv"],
    evaluated,
    nets.teacher.apply(variables, x[::-1], train=False)["projection"],
    same_view=True,
  )
  assert float(metrics["loss_head/t_sv"]) == pytest.approx(float(expected), rel=1e-5)
  # Whole steps: the teacher, its running statistics included, stays bit-identical.
  before = host(state.teacher)
  for i in range(2):
    state, _ = train_step(state, *images(mesh, seed=i))
  assert_trees_equal(host(state.teacher), before)
