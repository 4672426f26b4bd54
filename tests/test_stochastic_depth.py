"""Stochastic depth in training (model.<network>.drop_path_rate > 0): which forwards drop branches, with
which key, and that resume, targets and evaluation are unaffected by it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from simdis_jax import checkpoint, configuration, optim, parallel, step as step_lib
from simdis_jax.evaluation import features
from simdis_jax.models import vit
from simdis_jax.state import build_networks, create_train_state, trainable_params

IMAGE_SHAPE = (16, 16, 1)
RATE = 0.3
# The ViT student of these tests has 3 blocks of width 32 instead of DeiT-Ti's 12 of 192: the same module code
# (rates 0, 0.15, 0.3 over the blocks), a tenth of the compile time.
TEST_VIT = (32, 3, 2)


@pytest.fixture(autouse=True, scope="module")
def small_vit():
  """vit.SIZES['tiny'] = TEST_VIT while this module's tests run."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(vit.SIZES, "tiny", TEST_VIT)
    yield


def vit_config(method="simdis_off", views="simdis_2v", rate=RATE):
  """The tiny config with a ViT-Tiny/4 student of stochastic-depth `rate` (batch 8)."""
  c = tiny_config(method, views)
  c.model.student.arch, c.model.student.patch_size, c.model.student.drop_path_rate = "vit_tiny", 4, rate
  c.train.batch_size = 8
  c.teacher.workdir = "unread"  # the tests build the frozen teacher from its init; nothing reads a workdir
  return configuration.validate(c)


def fresh_state(config, mesh, total_steps=10):
  """(networks, tx, schedule, jitted state constructor) of `config` on `mesh`."""
  nets = build_networks(config)
  sched = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, total_steps, 0)
  tx = optim.make_optimizer(config.optim, sched)
  create = jax.jit(
    functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE), out_shardings=parallel.replicated(mesh)
  )
  return nets, tx, sched, create


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def trees_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(host(a)), jax.tree.leaves(host(b))
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_only_trainable_networks_with_a_rate_drop_branches():
  assert step_lib.stochastic_depth_networks(tiny_config("simdis_off", "simdis_2v")) == ()
  c = tiny_config("simdis_off", "simdis_2v")
  c.model.student.drop_path_rate = c.model.teacher.drop_path_rate = 0.1
  assert step_lib.stochastic_depth_networks(c) == ("student",)  # the frozen teacher and every EMA stay exact
  c.method = "simdis_on"
  assert step_lib.stochastic_depth_networks(c) == ("student", "teacher")  # SimDis-On's teacher trains
  c.model.student.drop_path_rate = 0.0
  assert step_lib.stochastic_depth_networks(c) == ("teacher",)


def test_drop_path_rate_is_validated_with_one_clear_line():
  with pytest.raises(
    ValueError,
    match=r"config.model.student.drop_path_rate=0.1: arch='resnet' has no "
    r"stochastic depth; set it to 0 or use one of",
  ):
    c = tiny_config()
    c.model.student.drop_path_rate = 0.1
    configuration.validate(c)
  with pytest.raises(ValueError, match=r"config.model.student.drop_path_rate=1.0 must be in \[0, 1\)"):
    vit_config(rate=1.0)
  assert vit_config().model.student.drop_path_rate == RATE


def test_dropout_key_differs_per_device_and_depends_only_on_rng_and_step():
  mesh = parallel.make_mesh(jax.devices()[:2])
  keys = jax.jit(
    jax.shard_map(
      lambda r, s: step_lib.dropout_key(r, s)[None],
      mesh=mesh,
      in_specs=(P(), P()),
      out_specs=P(parallel.DATA_AXIS),
      check_vma=False,
    )
  )
  rng = jax.random.PRNGKey(3)
  a = np.asarray(keys(rng, jnp.int32(5)))
  assert a.shape == (2, 2) and not np.array_equal(a[0], a[1])
  np.testing.assert_array_equal(a, np.asarray(keys(rng, jnp.int32(5))))
  assert not np.array_equal(a, np.asarray(keys(rng, jnp.int32(6))))
  assert not np.array_equal(a, np.asarray(keys(jax.random.PRNGKey(4), jnp.int32(5))))


@pytest.fixture(scope="module")
def vit_run():
  """The ViT-student config, its networks, a fresh state and two float views (one device)."""
  c = vit_config()
  mesh = parallel.make_mesh(jax.devices()[:1])
  nets, _, _, create = fresh_state(c, mesh)
  rng = np.random.default_rng(0)
  v1, v2 = (jnp.asarray(rng.normal(size=(8,) + IMAGE_SHAPE), jnp.float32) for _ in range(2))
  return c, nets, create(), v1, v2


def test_the_step_rng_draws_the_masks_and_the_same_rng_repeats_them(vit_run):
  c, _, state, v1, v2 = vit_run
  research = step_lib.make_research_step(c, total_steps=10)
  labels = jnp.full((8,), -1, jnp.int32)
  a = research(state, v1, v2, labels)
  again = research(state, v1, v2, labels)
  other = research(state.replace(rng=jax.random.PRNGKey(123)), v1, v2, labels)
  assert trees_equal(a.grads, again.grads) and trees_equal(a.state, again.state)
  # The views are the caller's, so the state's RNG reaches the update only through the dropped branches.
  assert not np.array_equal(np.asarray(a.loss), np.asarray(other.loss))
  differ = [
    not np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(host(a.state.student.params)), jax.tree.leaves(host(other.state.student.params)))
  ]
  assert np.mean(differ) > 0.9


def test_targets_and_evaluation_are_deterministic(vit_run):
  c, nets, state, v1, v2 = vit_run
  c = c.copy_and_resolve_references()
  c.model.sync_bn = False  # loss_fn outside shard_map
  run = jax.jit(
    lambda key: step_lib.loss_fn(trainable_params(state, c), state, v1, v2, networks=nets, config=c, dropout_key=key)[
      1
    ][2]
  )
  outputs = run(jax.random.PRNGKey(7))

  def plain(network, params, stats, x):  # a train-mode BN forward with no stochastic depth asked for
    return getattr(nets, network).apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )[0]["projection"]

  s = state.student
  # The student's training forward drops branches; its EMA target (built with the same rate) does not: it
  # equals the forward without stochastic depth up to the rounding of another compiled program.
  dropped = np.abs(outputs["student"][0]["projection"] - plain("student", s.params, s.batch_stats, v1)).max()
  assert dropped > 1e-2
  for i, x in enumerate((v1, v2)):
    np.testing.assert_allclose(
      outputs["student_ema"][i]["projection"],
      plain("student_ema", s.ema_params, s.ema_batch_stats, x),
      rtol=1e-4,
      atol=2e-5,
    )
  other_key = run(jax.random.PRNGKey(8))["student"][0]["projection"]
  assert not np.array_equal(other_key, outputs["student"][0]["projection"])
  with pytest.raises(ValueError, match=r"\['student'\] train with stochastic depth .* no dropout_key"):
    step_lib.loss_fn(trainable_params(state, c), state, v1, v2, networks=nets, config=c)
  # Evaluation's feature function gives what the same weights give without stochastic depth.
  no_drop = build_networks(vit_config(rate=0.0)).student
  variables = features.encoder_variables(s)
  images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  got = [features.feature_function(net, c.data.augment, 16)(variables, images) for net in (nets.student, no_drop)]
  np.testing.assert_array_equal(got[0], got[1])


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
  c = vit_config()
  mesh = parallel.make_mesh(jax.devices()[:2])
  nets, tx, sched, create = fresh_state(c, mesh)
  train_step = step_lib.make_train_step(c, nets, tx, sched, 10, mesh)
  rng = np.random.default_rng(0)
  batches = [
    (
      parallel.global_batch(rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8), mesh),
      parallel.global_batch(rng.integers(0, 10, (8,), dtype=np.int32), mesh),
    )
    for _ in range(3)
  ]
  straight = create()
  for x, y in batches:
    straight, _ = train_step(straight, x, y)
  resumed, _ = train_step(create(), *batches[0])
  mgr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mgr, 1, resumed, force=True)
  mgr.wait_until_finished()
  abstract = parallel.replicated_abstract(jax.eval_shape(create), mesh)
  resumed = checkpoint.restore_latest(checkpoint.manager(str(tmp_path)), abstract)
  assert int(resumed.step) == 1
  for x, y in batches[1:]:
    resumed, metrics = train_step(resumed, x, y)
  assert np.isfinite(float(metrics["loss"]))
  assert trees_equal(straight, resumed)
