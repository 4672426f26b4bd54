"""The method against docs/spec.md: the seven targets, the loss, head combination, EMA."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simdis_jax.methods import simdis

NETWORKS = ("student", "student_ema", "teacher", "teacher_ema")
# docs/spec.md's table: the target for the prediction of v and of v'.
SPEC_TABLE = {
  "s_dv": (("student", 1), ("student", 0)),
  "sema_sv": (("student_ema", 0), ("student_ema", 1)),
  "sema_dv": (("student_ema", 1), ("student_ema", 0)),
  "t_sv": (("teacher", 0), ("teacher", 1)),
  "t_dv": (("teacher", 1), ("teacher", 0)),
  "tema_sv": (("teacher_ema", 0), ("teacher_ema", 1)),
  "tema_dv": (("teacher_ema", 1), ("teacher_ema", 0)),
}


def _distinct_targets(dim=8):
  """Each (network, view) projects to its own one-hot direction (scaled: targets are normalised)."""
  eye = np.eye(dim, dtype=np.float32)
  return {net: (jnp.asarray(3.0 * eye[[2 * i]]), jnp.asarray(5.0 * eye[[2 * i + 1]])) for i, net in enumerate(NETWORKS)}


@pytest.mark.parametrize("view", list(simdis.VIEWS))
def test_each_view_targets_the_tensor_spec_names(view):
  targets = _distinct_targets()
  (net_v, i_v), (net_v2, i_v2) = SPEC_TABLE[view]
  # Predicting exactly docs/spec.md's targets gives zero loss ...
  right = (targets[net_v][i_v], targets[net_v2][i_v2])
  loss, per_head = simdis.student_loss({view: right}, targets, [view])
  assert float(loss) == pytest.approx(0.0, abs=1e-6)
  # ... and predicting any other (network, view) pair costs 2 per wrong half (orthogonal directions).
  for (n1, j1), (n2, j2) in itertools.product(itertools.product(NETWORKS, (0, 1)), repeat=2):
    wrong = (targets[n1][j1], targets[n2][j2])
    expected = 2.0 * ((n1, j1) != (net_v, i_v)) + 2.0 * ((n2, j2) != (net_v2, i_v2))
    loss, _ = simdis.student_loss({view: wrong}, targets, [view])
    assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_regression_loss_is_two_minus_two_cos():
  p = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
  z = jnp.array([[0.0, 3.0], [2.0, 2.0], [0.0, -1.0]])
  np.testing.assert_allclose(simdis.regression_loss(p, z), [2.0, 0.0, 4.0], atol=1e-6)


def test_head_loss_sums_the_two_symmetric_halves():
  # Half 1: cos = 0 -> 2; half 2: cos = -1 -> 4. Sum = 6 (a mean would give 3).
  p_v, p_v2 = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]])
  z_v, z_v2 = jnp.array([[0.0, -1.0]]), jnp.array([[0.0, 1.0]])
  assert float(simdis.head_loss(p_v, p_v2, z_v, z_v2, same_view=False)) == pytest.approx(6.0)
  # Same-view pairing: (p_v, z_v): cos 0 -> 2; (p_v2, z_v2): cos 1 -> 0.
  assert float(simdis.head_loss(p_v, p_v2, z_v, z_v2, same_view=True)) == pytest.approx(2.0)


def test_head_loss_averages_over_the_batch():
  p = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  z = jnp.array([[1.0, 0.0], [-1.0, 0.0]])  # per-example 0 and 4
  assert float(simdis.head_loss(p, p, z, z, same_view=True)) == pytest.approx(2.0 + 2.0)


def test_student_loss_is_the_plain_mean_over_heads_or_the_sum():
  targets = _distinct_targets()
  views = ["sema_dv", "tema_dv", "t_sv"]
  preds = {v: (targets["student"][0], targets["student"][1]) for v in views}
  # Every head gets both halves wrong except none -> 4 each.
  mean_loss, per_head = simdis.student_loss(preds, targets, views, "mean")
  sum_loss, _ = simdis.student_loss(preds, targets, views, "sum")
  assert float(mean_loss) == pytest.approx(4.0)
  assert float(sum_loss) == pytest.approx(12.0)
  assert set(per_head) == set(views)
  with pytest.raises(ValueError, match="head combination"):
    simdis.student_loss(preds, targets, views, "max")


def test_targets_get_stop_gradient():
  z = jnp.array([[1.0, 2.0]])
  grad = jax.grad(lambda t: simdis.regression_loss(jnp.array([[0.5, -1.0]]), t).sum())(z)
  np.testing.assert_array_equal(grad, np.zeros_like(z))


def test_unknown_view_lists_the_valid_ones():
  with pytest.raises(ValueError) as e:
    simdis.check_views(["sema_dv", "teacher_view"])
  for name in simdis.VIEWS:
    assert name in str(e.value)
  assert "teacher_view" in str(e.value)
  with pytest.raises(ValueError, match="empty"):
    simdis.check_views([])
  assert simdis.check_views(["t_sv"]) == ("t_sv",)


def test_target_networks_follow_the_views_and_the_online_teacher():
  assert simdis.target_networks(["sema_dv"], "byol") == ("student_ema",)
  assert simdis.target_networks(["s_dv", "t_sv"], "simdis_off") == ("student", "teacher")
  assert simdis.target_networks(["sema_dv"], "simdis_on") == ("student_ema", "teacher", "teacher_ema")


def test_ema_schedule_at_start_middle_and_end():
  k_total = 1000
  assert float(simdis.ema_decay(0, k_total, 0.99)) == pytest.approx(0.99)
  assert float(simdis.ema_decay(500, k_total, 0.99)) == pytest.approx(0.995)
  assert float(simdis.ema_decay(1000, k_total, 0.99)) == pytest.approx(1.0)
  k = 250
  expected = 1 - 0.01 * (math.cos(math.pi * k / k_total) + 1) / 2
  assert float(simdis.ema_decay(k, k_total, 0.99)) == pytest.approx(expected, rel=1e-6)


def test_ema_update_rule_covers_encoder_and_projector_only():
  ema = {"encoder": {"w": jnp.array([1.0, 2.0])}, "projector": {"w": jnp.array([0.0])}}
  online = {
    "encoder": {"w": jnp.array([3.0, 4.0])},
    "projector": {"w": jnp.array([10.0])},
    "predictor_sema_dv": {"w": jnp.array([7.0])},
  }
  new = simdis.ema_update(ema, online, 0.9)
  np.testing.assert_allclose(new["encoder"]["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 4], rtol=1e-6)
  np.testing.assert_allclose(new["projector"]["w"], [1.0], rtol=1e-6)
  assert set(new) == {"encoder", "projector"}
