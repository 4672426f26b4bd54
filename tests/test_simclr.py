"""SimCLR: NT-Xent by hand, the research step against the official formulas in float64 (torch), negatives
gathered over devices, SimCLR's LARS, and a SimCLR teacher inside SimDis-On."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import run_helpers
from conftest import tiny_config
from simdis_jax import configuration, methods, parallel
from simdis_jax import step as step_lib
from simdis_jax.methods import simclr
from simdis_jax.state import build_networks
from test_step import images

BATCH = 16


def simclr_config():
  c = run_helpers.tiny_method_config("simclr", simclr.recipe, proj_dim=16)
  c.optim.warmup_epochs = 0.0
  return configuration.validate(c)


def test_nt_xent_by_hand_on_one_hot_projections():
  e = jnp.eye(4)
  # Each positive pair identical, the two examples orthogonal, T = 1: each anchor sees e^1 (its positive) and
  # e^0 twice (the other example's two views; its own view is masked): -log(e / (e + 2)) per anchor and side.
  loss, logits = simclr.nt_xent(e[:2], e[:2], 1.0, axis_name=None)
  assert float(loss) == pytest.approx(2 * math.log(1 + 2 / math.e), rel=1e-6)
  np.testing.assert_allclose(np.asarray(logits), [[1, 0, -1e9, 0], [0, 1, 0, -1e9]], rtol=1e-6)
  # Everything orthogonal: the positive is one of 3 equal candidates on each side: 2 log 3.
  assert float(simclr.nt_xent(e[:2], e[2:], 1.0, axis_name=None)[0]) == pytest.approx(2 * math.log(3), rel=1e-6)
  # The temperature divides every similarity: T = 0.5 doubles the positive's logit.
  assert float(simclr.nt_xent(e[:2], e[:2], 0.5, axis_name=None)[0]) == pytest.approx(
    2 * math.log(1 + 2 / math.e**2), rel=1e-6
  )


def official_loss(z1, z2, temperature):
  """google-research/simclr add_contrastive_loss (one replica) in torch: loss_a + loss_b over [h·H2, h·H1]."""
  h1, h2 = torch.nn.functional.normalize(z1, dim=-1), torch.nn.functional.normalize(z2, dim=-1)
  n = h1.shape[0]
  labels = torch.nn.functional.one_hot(torch.arange(n), 2 * n).double()
  masks = torch.nn.functional.one_hot(torch.arange(n), n).double()
  logits_aa = h1 @ h1.T / temperature - masks * 1e9
  logits_bb = h2 @ h2.T / temperature - masks * 1e9
  logits_ab = h1 @ h2.T / temperature
  logits_ba = h2 @ h1.T / temperature
  ce = lambda logits: -(labels * torch.log_softmax(logits, -1)).sum(-1).mean()  # noqa: E731
  logits_a = torch.cat([logits_ab, logits_aa], 1)
  return ce(logits_a) + ce(torch.cat([logits_ba, logits_bb], 1)), logits_a


def test_research_step_in_float64_is_the_official_loss_and_gradient():
  c = simclr_config()
  rng = np.random.default_rng(0)
  v1, v2 = rng.normal(size=(2, BATCH) + run_helpers.IMAGE_SHAPE)
  state = run_helpers.fresh_state(c)
  with jax.enable_x64(True):
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10, outputs=True)
    nets = build_networks(c, dtype=jnp.float64)
    s64 = step_lib.cast_floats(state, jnp.float64)

    def forward(params):
      variables = {"params": params, "batch_stats": s64.student.batch_stats}
      return [
        nets.student.apply(variables, jnp.asarray(v), train=True, mutable=["batch_stats"])[0]["projection"]
        for v in (v1, v2)
      ]

    ours, vjp = jax.vjp(forward, s64.student.params)
  for i in (0, 1):
    # The step's compiled forward fuses differently from this one: float64 rounding apart, the same values.
    np.testing.assert_allclose(
      np.asarray(ours[i]), np.asarray(r.outputs["student"][i]["projection"]), rtol=1e-12, atol=1e-14
    )
  z1, z2 = (torch.tensor(np.asarray(z), dtype=torch.float64, requires_grad=True) for z in ours)
  loss, logits_a = official_loss(z1, z2, c.simclr.temperature)
  loss.backward()
  assert r.loss.dtype == jnp.float64 and r.logits.shape == (BATCH, 2 * BATCH)
  assert float(r.loss) == pytest.approx(loss.item(), rel=1e-12)
  np.testing.assert_allclose(np.asarray(r.logits), logits_a.detach().numpy(), rtol=1e-12, atol=1e-9)
  with jax.enable_x64(True):
    (expected,) = vjp([jnp.asarray(z1.grad.numpy()), jnp.asarray(z2.grad.numpy())])
  for a, b in zip(jax.tree.leaves(r.grads["student"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_negatives_are_gathered_over_devices_so_eight_devices_take_the_one_device_step():
  c = simclr_config()  # SyncBN: every device normalises over the global batch, as one device does
  nets = build_networks(c)
  tx = methods.make_optimizer(c, lambda step: jnp.asarray(0.1))
  state = jax.device_get(run_helpers.fresh_state(c))
  results = {}
  for devices in (1, 8):
    mesh = parallel.make_mesh(jax.devices()[:devices])
    step = step_lib.make_train_step(c, nets, tx, lambda s: jnp.asarray(0.1), 10, mesh)
    new, metrics = step(jax.device_put(state, parallel.replicated(mesh)), *images(mesh, BATCH, seed=3))
    results[devices] = float(metrics["loss"]), jax.device_get(new.student.params)
  assert results[8][0] == pytest.approx(results[1][0], rel=1e-6)
  # (With each device's own negatives only, 2 per anchor instead of 30, the 8-device loss would differ.)
  for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[8][1])):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_lars_one_step_by_hand():
  w = {"kernel": jnp.asarray([[3.0, 4.0]]), "bias": jnp.asarray([1.0])}
  g = {"kernel": jnp.asarray([[0.0, 1.0]]), "bias": jnp.asarray([2.0])}
  tx = simclr.simclr_lars(lambda count: 0.5, momentum=0.9, eta=1e-3, weight_decay=0.1)
  updates, state = tx.update(g, tx.init(w), w)
  decayed = np.asarray([[0.3, 1.4]])  # g + 0.1 w; ‖w‖ = 5, ‖g + wd w‖ = sqrt(0.09 + 1.96)
  trust = 1e-3 * 5.0 / math.sqrt(0.09 + 1.96)
  np.testing.assert_allclose(np.asarray(updates["kernel"]), -0.5 * trust * decayed, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(updates["bias"]), [-0.5 * 2.0], rtol=1e-6)  # no decay, no trust ratio
  # The rate sits inside the momentum buffer: the second step adds 0.9 × the first.
  updates2, _ = tx.update(g, state, w)
  np.testing.assert_allclose(np.asarray(updates2["bias"]), [-(0.9 * 1.0 + 1.0)], rtol=1e-6)
  # A zero kernel takes trust ratio 1.
  zero = {"kernel": jnp.zeros((1, 2)), "bias": jnp.asarray([1.0])}
  np.testing.assert_allclose(np.asarray(tx.update(g, tx.init(zero), zero)[0]["kernel"]), [[0.0, -0.5]], rtol=1e-6)


def teacher_config(views):
  c = tiny_config("simdis_on", "byol")
  c.views = views
  c.teacher.method = "simclr"
  return c


def test_a_simclr_teacher_takes_only_the_views_an_ema_free_teacher_has():
  with pytest.raises(ValueError, match=r"teacher.method='simclr' has no EMA teacher, so the T̂ views \['tema_sv'\]"):
    configuration.validate(teacher_config(("sema_dv", "t_dv", "tema_sv")))
  c = configuration.validate(teacher_config(("sema_dv", "t_sv", "t_dv")))
  rng = np.random.default_rng(1)
  v1, v2 = rng.normal(size=(2, BATCH) + run_helpers.IMAGE_SHAPE)
  state = run_helpers.fresh_state(c)
  with jax.enable_x64(True):
    r = step_lib.research_step(c, state, jnp.asarray(v1), jnp.asarray(v2), total_steps=10, outputs=True)
  assert set(r.outputs) == {"student", "student_ema", "teacher"}
  z1, z2 = (torch.tensor(np.asarray(r.outputs["teacher"][i]["projection"])) for i in (0, 1))
  assert float(r.metrics["loss_teacher"]) == pytest.approx(official_loss(z1, z2, 0.1)[0].item(), rel=1e-12)
  assert float(r.loss) == pytest.approx(float(r.metrics["loss_student"] + r.metrics["loss_teacher"]), rel=1e-12)
  for a, b in zip(jax.tree.leaves(r.state.teacher.ema_params), jax.tree.leaves(state.teacher.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float64))


def test_the_fashion_mnist_preset_is_valid():
  c = configuration.validate(run_helpers.shipped_config("configs/fashion_mnist/simclr.py"))
  assert c.method == "simclr" and c.optim.name == "lars" and c.simclr.temperature == 0.2
  c = configuration.validate(run_helpers.shipped_config("configs/fashion_mnist/simclr.py:teacher"))
  assert c.method == "simdis_on" and c.teacher.method == "simclr" and "tema_dv" not in c.views
