"""The train step: gradient flow, frozen/online teachers, SyncBN and per-device BN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from simdis_jax import optim, parallel, step as step_lib
from simdis_jax.models.network import Network
from simdis_jax.state import TrainState, build_networks, create_train_state, trainable_params

IMAGE_SHAPE = (16, 16, 1)


def build(config, devices=1, total_steps=10):
  """Networks, state and jitted step for `config` on the first `devices` devices."""
  mesh = parallel.make_mesh(jax.devices()[:devices])
  nets = build_networks(config)
  sched = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, total_steps, 0)
  tx = optim.make_optimizer(config.optim, sched)
  state = jax.jit(
    functools.partial(create_train_state, config, nets, tx, IMAGE_SHAPE), out_shardings=parallel.replicated(mesh)
  )()
  return mesh, nets, tx, state, step_lib.make_train_step(config, nets, tx, sched, total_steps, mesh)


def images(mesh, n=16, seed=0):
  """A (uint8 images, labels) batch, sharded over the mesh."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
  y = rng.integers(0, 10, (n,), dtype=np.int32)
  return parallel.global_batch(x, mesh), parallel.global_batch(y, mesh)


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_student_loss_sends_no_gradient_into_the_teacher():
  c = tiny_config("simdis_on", "table2_all_teacher")  # every teacher-target view
  c.model.sync_bn = False  # lets loss_fn run outside shard_map
  mesh, nets, _, state, _ = build(c)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8,) + IMAGE_SHAPE), jnp.float32)

  def student_only(trainable):
    _, (metrics, _, _) = step_lib.loss_fn(trainable, state, x, x[::-1], networks=nets, config=c)
    return metrics["loss_student"]

  grads = jax.grad(student_only)(trainable_params(state, c))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["teacher"]))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["student"])) > 0.0


def test_offline_teacher_and_its_ema_stay_bit_identical():
  c = tiny_config("simdis_off", "simdis_7v")
  mesh, _, _, state, train_step = build(c)
  before = host(state.teacher)
  student_before = host(state.student.params)
  for i in range(3):
    state, metrics = train_step(state, *images(mesh, seed=i))
  assert np.isfinite(float(metrics["loss"]))
  assert_trees_equal(host(state.teacher), before)
  changed = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(student_before), jax.tree.leaves(host(state.student.params)))
  ]
  assert all(changed)


def test_online_teacher_update_equals_a_teacher_only_byol_step():
  c_on = tiny_config("simdis_on", "simdis_2v")
  mesh, _, _, state_on, step_on = build(c_on)
  c_byol = tiny_config("byol", "byol")
  c_byol.model.student = c_on.model.teacher
  _, _, tx_b, _, step_b = build(c_byol)
  teacher = jax.tree.map(jnp.copy, state_on.teacher)
  state_b = TrainState(
    jnp.copy(state_on.step), jnp.copy(state_on.rng), teacher, None, tx_b.init({"student": teacher.params})
  )
  for i in range(2):
    state_on, m_on = step_on(state_on, *images(mesh, seed=i))
    state_b, m_b = step_b(state_b, *images(mesh, seed=i))
  assert float(m_on["loss_teacher"]) == pytest.approx(float(m_b["loss_student"]), rel=1e-5)
  assert_trees_close(host(state_on.teacher), host(state_b.student), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv_impl", ["xla", "matmul"])
def test_syncbn_step_on_8_devices_equals_the_step_on_1(conv_impl):
  c = tiny_config("simdis_on", "simdis_2v")  # student and online teacher, both with SyncBN
  c.model.sync_bn = True
  c.model.conv_impl = conv_impl
  results = []
  for devices in (1, 8):
    mesh, _, _, state, train_step = build(c, devices)
    for i in range(2):
      state, metrics = train_step(state, *images(mesh, seed=i))
    results.append((host(state), host(metrics)))
  # float32 sums in another order on 1 and 8 devices: the states agree to ~1e-4 (at the tests' XLA
  # optimisation level 0, up to 1.1e-4 beyond rtol); per-device BN statistics instead (sync_bn=False)
  # move some entries by 0.35 after these two steps.
  assert_trees_close(results[0][0], results[1][0], rtol=2e-4, atol=2e-4)
  assert results[0][1]["loss"] == pytest.approx(results[1][1]["loss"], rel=1e-5)


def test_per_device_bn_equals_bn_computed_shard_by_shard():
  net = Network(10, 4, True, 16, 8, heads=("sema_dv",))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(16,) + IMAGE_SHAPE), jnp.float32)
  variables = net.init(jax.random.PRNGKey(0), x[:2], train=False)
  mesh = parallel.make_mesh(jax.devices()[:8])

  def per_device(v, xs, axis):
    out, mutated = net.apply(v, xs, train=True, bn_axis_name=axis, mutable=["batch_stats"])
    return out["projection"], jax.lax.pmean(mutated["batch_stats"], parallel.DATA_AXIS)

  def run(axis):
    f = jax.shard_map(
      functools.partial(per_device, axis=axis),
      mesh=mesh,
      in_specs=(P(), P("data")),
      out_specs=(P("data"), P()),
      check_vma=False,
    )
    return jax.jit(f)(variables, x)

  proj, stats = run(None)
  shards = [net.apply(variables, x[2 * i : 2 * i + 2], train=True, mutable=["batch_stats"]) for i in range(8)]
  np.testing.assert_allclose(proj, np.concatenate([s[0]["projection"] for s in shards]), rtol=1e-3, atol=2e-4)
  mean_stats = jax.tree.map(lambda *s: sum(s) / 8, *[s[1]["batch_stats"] for s in shards])
  assert_trees_close(host(stats), host(mean_stats), rtol=1e-4, atol=1e-6)
  # SyncBN differs: statistics over the global batch equal one call on the whole batch.
  proj_sync, _ = run(parallel.DATA_AXIS)
  whole, _ = net.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(proj_sync, whole["projection"], rtol=1e-3, atol=2e-4)
  assert not np.allclose(proj, proj_sync, atol=1e-3)


def test_step_metrics_and_ema_after_one_step():
  c = tiny_config("byol", "byol")
  c.ema.base = 0.5
  mesh, _, _, state, train_step = build(c, total_steps=4)
  online0 = host(state.student.params)
  state1, m = train_step(state, *images(mesh))
  # Authors' timing: EMA at step 0 mixes the copy with the pre-update weights -> unchanged.
  assert_trees_equal(host(state1.student.ema_params)["encoder"], online0["encoder"])
  assert int(state1.step) == 1
  assert float(m["tau"]) == pytest.approx(0.5)
  online1 = host(state1.student.params)
  state2, m = train_step(state1, *images(mesh, seed=1))
  tau1 = 1 - 0.5 * (np.cos(np.pi * 1 / 4) + 1) / 2
  k = online0["encoder"]["stem_conv"]["kernel"]
  expected = tau1 * k + (1 - tau1) * online1["encoder"]["stem_conv"]["kernel"]
  np.testing.assert_allclose(host(state2.student.ema_params)["encoder"]["stem_conv"]["kernel"], expected, rtol=1e-6)
  assert set(m) >= {"loss", "loss_student", "loss_head/sema_dv", "lr", "tau", "grad_norm", "param_norm"}
  assert 0.0 <= float(m["loss"]) <= 8.0  # one head: two halves of [0, 4]


def test_online_probe_learns_without_touching_the_representation():
  results = {}
  for enabled in (False, True):
    c = tiny_config("simdis_on", "simdis_2v")
    c.probe.enabled = enabled
    c.probe.num_classes = 10
    mesh, _, _, state, train_step = build(c)
    state, metrics = train_step(state, *images(mesh))
    results[enabled] = (host(state), host(metrics))
  off, on = results[False][0], results[True][0]
  # Representation parameters, EMAs, BN statistics and optimizer state: bit-identical.
  for part in ("student", "teacher", "opt_state"):
    assert_trees_equal(getattr(on, part), getattr(off, part))
  assert off.probe is None
  assert on.probe["student"]["kernel"].shape == (32, 10) and on.probe["teacher"]["kernel"].shape == (64, 10)
  assert np.abs(on.probe["student"]["kernel"]).max() > 0
  m = results[True][1]
  assert m["probe_loss/student"] == pytest.approx(np.log(10), rel=0.2)  # first steps: near chance
  assert 0.0 <= m["probe_top1/teacher"] <= 100.0


def test_probe_loss_leaves_unlabelled_examples_out():
  params = {"kernel": jnp.asarray(np.random.RandomState(0).normal(size=(4, 3)), jnp.float32), "bias": jnp.zeros(3)}
  features = jnp.asarray(np.random.RandomState(1).normal(size=(6, 4)), jnp.float32)
  labels = jnp.asarray([0, 2, -1, 1, -1, 2])
  loss_sum, (correct, count) = step_lib.probe_loss(params, features, labels)
  keep = np.asarray(labels) >= 0
  logits = np.asarray(features @ params["kernel"])[keep]
  ce = -jax.nn.log_softmax(logits)[np.arange(keep.sum()), np.asarray(labels)[keep]]
  assert int(count) == 4 and float(loss_sum) == pytest.approx(float(ce.sum()), rel=1e-5)
  assert int(correct) == int((logits.argmax(-1) == np.asarray(labels)[keep]).sum())


def test_supervised_student_fits_labels_and_its_first_loss_is_the_cross_entropy():
  c = tiny_config("supervised", "byol")
  c.probe.num_classes = 10
  c.optim.name = "sgd"
  c.optim.base_lr = 0.4
  mesh, nets, _, state, train_step = build(c, total_steps=30)
  assert nets.teacher is None
  params0 = host(state.student.params)
  assert params0["classifier"]["kernel"].shape == (32, 10)  # width 4 -> 32-d pooled features
  # A learnable batch: the label sets the image's brightness.
  rng = np.random.default_rng(0)
  labels = np.arange(16, dtype=np.int32) % 10
  pixels = np.clip(labels[:, None, None, None] * 25 + rng.integers(0, 20, (16, 28, 28, 1)), 0, 255)
  x, y = parallel.global_batch(pixels.astype(np.uint8), mesh), parallel.global_batch(labels, mesh)
  # The first loss is the mean over both views of softmax cross-entropy of the student's logits:
  # recompute it for view 1 from the same augmented views the step sees.
  key = jax.random.fold_in(state.rng, 0)
  from simdis_jax.data import augment  # pylint: disable=import-outside-toplevel

  v1, v2 = augment.two_views(key, x, c.data.augment, out_size=c.data.image_size)
  expected = []
  for v in (v1, v2):
    out, _ = nets.student.apply(
      {"params": state.student.params, "batch_stats": state.student.batch_stats}, v, train=True, mutable=["batch_stats"]
    )
    expected.append(float(jnp.mean(-jax.nn.log_softmax(out["logits"])[jnp.arange(16), y])))
  losses = []
  for _ in range(25):
    state, m = train_step(state, x, y)
    losses.append(float(m["loss"]))
  assert losses[0] == pytest.approx(np.mean(expected), rel=1e-4)
  # Freshly augmented views each step: the loss falls well below chance level (ln 10 = 2.30).
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert float(m["train_top1"]) >= 50.0
  # BN statistics move; the EMA copy follows the encoder as for the other methods.
  assert np.abs(host(state.student.batch_stats)["encoder"]["stem_bn"]["mean"]).max() > 0
  assert set(host(state.student.ema_params)) == {"encoder", "projector"}
