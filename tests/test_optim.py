"""LARS forms, masks and the warm-up + cosine schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simdis_jax import configuration, optim
from simdis_jax.models.network import Network


def _optim_config(**kw):
  c = configuration.base_config().optim
  for k, v in kw.items():
    c[k] = v
  return c


def test_lars_mask_excludes_biases_and_batchnorm():
  net = Network(18, 4, True, 16, 8, heads=("sema_dv",))
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), train=False)["params"]
  flat = jax.tree_util.tree_flatten_with_path(optim.kernel_mask(params))[0]
  included = {jax.tree_util.keystr(p) for p, m in flat if m}
  excluded = {jax.tree_util.keystr(p) for p, m in flat if not m}
  assert included and excluded
  assert all(p.endswith("['kernel']") for p in included)
  # BN scale/bias (encoder and MLP BNs) and Dense biases are all excluded.
  assert any("BatchNorm" in p and p.endswith("['scale']") for p in excluded)
  assert any("['bn']" in p and p.endswith("['bias']") for p in excluded)
  assert any("['dense1']['bias']" in p for p in excluded)
  assert all(p.endswith("['scale']") or p.endswith("['bias']") for p in excluded)


def test_authors_lars_matches_the_hand_computed_update():
  lr, eta, wd, m = 0.5, 1e-3, 1e-4, 0.9
  w = {"kernel": jnp.array([3.0, 4.0]), "bias": jnp.array([1.0])}
  g = {"kernel": jnp.array([0.6, 0.8]), "bias": jnp.array([0.5])}
  tx = optim.authors_lars(lambda _: lr, m, eta, wd, "all")
  state = tx.init(w)
  upd, state = tx.update(g, state, w)
  local = lr * eta * 5.0 / (1.0 + wd * 5.0 + 1e-8)
  np.testing.assert_allclose(upd["kernel"], -local * (np.array([0.6, 0.8]) + wd * np.array([3.0, 4.0])), rtol=1e-6)
  np.testing.assert_allclose(upd["bias"], -lr * (0.5 + wd * 1.0), rtol=1e-6)
  # Second step: momentum inside the buffer, which already holds the learning rate.
  upd2, _ = tx.update(g, state, w)
  np.testing.assert_allclose(upd2["bias"], -(m + 1) * lr * (0.5 + wd), rtol=1e-6)
  # The kernels-only weight-decay mask leaves the bias undecayed.
  tx = optim.authors_lars(lambda _: lr, m, eta, wd, "kernels")
  upd, _ = tx.update(g, tx.init(w), w)
  np.testing.assert_allclose(upd["bias"], -lr * 0.5, rtol=1e-6)


def test_deepmind_lars_applies_the_rate_outside_momentum_unlike_optax():
  w = {"kernel": jnp.array([3.0, 4.0])}
  g = {"kernel": jnp.array([0.6, 0.8])}
  rates = [1.0, 0.1]
  schedule = lambda count: jnp.asarray(rates)[jnp.minimum(count, 1)]
  results = {}
  for form in ("deepmind", "optax"):
    tx = optim.make_optimizer(_optim_config(lars_form=form, weight_decay=0.0, trust_coefficient=1.0), schedule)
    s = tx.init(w)
    _, s = tx.update(g, s, w)
    results[form], _ = tx.update(g, s, w)
  trust = 1.0 * 5.0 / 1.0  # η‖w‖/‖g‖
  scaled = trust * np.array([0.6, 0.8])
  # DeepMind: lr_2 · (m·u + u); optax: m·lr_1·u + lr_2·u.
  np.testing.assert_allclose(results["deepmind"]["kernel"], -0.1 * (0.9 + 1) * scaled, rtol=1e-5)
  np.testing.assert_allclose(results["optax"]["kernel"], -(0.9 * 1.0 + 0.1) * scaled, rtol=1e-5)


def test_sgd_is_pytorch_momentum_with_weight_decay():
  tx = optim.make_optimizer(_optim_config(name="sgd", weight_decay=0.1), lambda _: 0.5)
  w, g = {"kernel": jnp.array([2.0])}, {"kernel": jnp.array([1.0])}
  s = tx.init(w)
  u1, s = tx.update(g, s, w)
  u2, _ = tx.update(g, s, w)
  np.testing.assert_allclose(u1["kernel"], [-0.5 * 1.2], rtol=1e-6)
  np.testing.assert_allclose(u2["kernel"], [-0.5 * (0.9 * 1.2 + 1.2)], rtol=1e-6)


def test_warmup_cosine_schedule():
  sched = optim.warmup_cosine_schedule(0.3, 512, total_steps=100, warmup_steps=10, warmup_init_lr=1e-6)
  peak = 0.3 * 512 / 256
  assert float(sched(0)) == pytest.approx(1e-6)
  assert float(sched(5)) == pytest.approx(1e-6 + (peak - 1e-6) * 0.5, rel=1e-5)
  assert float(sched(10)) == pytest.approx(peak, rel=1e-6)
  assert float(sched(55)) == pytest.approx(peak * 0.5, rel=1e-5)
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)
  assert float(sched(30)) == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * 20 / 90)), rel=1e-5)


def test_steps_from_epochs_drops_the_partial_batch():
  assert optim.steps_from_epochs(2, 1000, 64) == 30
  assert optim.steps_from_epochs(0.5, 1000, 64) == 7


def test_unknown_optimizer_is_a_clear_error():
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(_optim_config(name="adam"), lambda _: 1.0)
  with pytest.raises(ValueError, match="lars_form"):
    optim.make_optimizer(_optim_config(lars_form="nvidia"), lambda _: 1.0)
