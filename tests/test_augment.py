"""Tests for simdis_jax.data.augment: each op on constructed images, then the pipeline."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simdis_jax.data import augment

LUMA = np.asarray([0.2989, 0.587, 0.114], np.float32)


def plain_config(num_channels=3):
  """Every random op off, identity normalisation: tests switch on one op at a time."""
  config = augment.default_config(num_channels)
  config.crop = False
  config.flip = False
  config.jitter_prob = 0.0
  config.grey_prob = 0.0
  config.blur_prob = (0.0, 0.0)
  config.solarize_prob = (0.0, 0.0)
  config.mean = (0.0,)
  config.std = (1.0,)
  return config


def random_images(shape, seed=0, dtype=np.float32):
  rs = np.random.RandomState(seed)
  if dtype == np.uint8:
    return jnp.asarray(rs.randint(0, 256, shape), jnp.uint8)
  return jnp.asarray(rs.uniform(size=shape), jnp.float32)


def ramp_images(batch, side=28, channels=1):
  """Each image holds side*side evenly spaced values in [0, 1], same in every channel."""
  ramp = np.linspace(0.0, 1.0, side * side, dtype=np.float32).reshape(side, side)
  return jnp.asarray(np.broadcast_to(ramp[None, :, :, None], (batch, side, side, channels)))


def run_view(config, images, view=0, seed=0, out_size=None):
  fn = jax.jit(lambda rng, x: augment.augment_view(rng, x, config, view, out_size))
  return np.asarray(fn(jax.random.key(seed), images))


def draws(config, view, count, seed=0):
  params = augment.view_params(config, view)
  keys = jax.random.split(jax.random.key(seed), count)
  return jax.tree.map(np.asarray, jax.vmap(lambda k: augment._draw_decisions(k, params))(keys))


def within_sigmas(fraction, p, count, sigmas=4.0):
  return abs(fraction - p) <= sigmas * math.sqrt(p * (1 - p) / count)


# ---------------------------------------------------------------- config


def test_default_config_has_spec_values():
  config = augment.default_config(3)
  assert tuple(config.crop_scale) == (0.08, 1.0)
  assert tuple(config.crop_ratio) == pytest.approx((3 / 4, 4 / 3))
  assert (config.jitter_prob, config.brightness, config.contrast, config.saturation, config.hue) == (
    0.8,
    0.4,
    0.4,
    0.2,
    0.1,
  )
  assert config.grey_prob == 0.2
  assert tuple(config.blur_prob) == (1.0, 0.1)
  assert tuple(config.solarize_prob) == (0.0, 0.2)
  assert tuple(config.mean) == (0.485, 0.456, 0.406)
  assert tuple(augment.default_config(1).std) == (0.3530,)


def test_view_params_picks_per_view_values_from_lists_and_scalars():
  config = augment.default_config(3)
  config.blur_prob = [0.7, 0.3]
  assert augment.view_params(config, 0)['blur_prob'] == 0.7
  assert augment.view_params(config, 1)['blur_prob'] == 0.3
  assert augment.view_params(config, 1)['solarize_prob'] == 0.2
  # Any attribute-access config works; a bare number applies to both views.
  loose = types.SimpleNamespace(**dict(config.to_dict(), solarize_prob=0.5))
  assert augment.view_params(loose, 0)['solarize_prob'] == 0.5
  assert augment.view_params(loose, 1)['solarize_prob'] == 0.5
  with pytest.raises(ValueError):
    augment.view_params(config, 2)


# ------------------------------------------------------------ single ops


def test_flip_mirrors_left_right_only_when_asked():
  image = random_images((5, 7, 3))
  np.testing.assert_array_equal(augment._flip(image, True), image[:, ::-1])
  np.testing.assert_array_equal(augment._flip(image, False), image)


def test_greyscale_op_equals_bt601_luma_on_every_channel():
  image = random_images((6, 6, 3))
  grey = np.asarray(augment._to_grey(image, True))
  expected = np.asarray(image) @ LUMA
  for c in range(3):
    np.testing.assert_allclose(grey[..., c], expected, atol=1e-6)
  np.testing.assert_array_equal(augment._to_grey(image, False), image)
  one = random_images((6, 6, 1))
  np.testing.assert_array_equal(augment._to_grey(one, True), one)


def test_solarize_op_inverts_values_at_or_above_half():
  ramp = ramp_images(1)[0]
  out = np.asarray(augment._solarize(ramp, True))
  x = np.asarray(ramp)
  np.testing.assert_array_equal(out[x < 0.5], x[x < 0.5])
  np.testing.assert_allclose(out[x >= 0.5], 1 - x[x >= 0.5], atol=1e-7)
  np.testing.assert_array_equal(augment._solarize(ramp, False), ramp)


def test_brightness_scales_and_clips():
  image = random_images((8, 8, 3))
  out = np.asarray(augment._adjust_brightness(image, 1.4))
  np.testing.assert_allclose(out, np.clip(1.4 * np.asarray(image), 0, 1), atol=1e-6)
  assert out.min() >= 0.0 and out.max() <= 1.0
  dark = np.asarray(augment._adjust_brightness(image, 0.6))
  np.testing.assert_allclose(dark, 0.6 * np.asarray(image), atol=1e-6)


def test_contrast_blends_with_mean_grey_level():
  image = random_images((8, 8, 3))
  mean_grey = float(np.mean(np.asarray(image) @ LUMA))
  flat = np.asarray(augment._adjust_contrast(image, 0.0))
  np.testing.assert_allclose(flat, mean_grey, atol=1e-6)
  np.testing.assert_allclose(augment._adjust_contrast(image, 1.0), image, atol=1e-6)
  strong = np.asarray(augment._adjust_contrast(image, 1.4))
  np.testing.assert_allclose(strong, np.clip(1.4 * np.asarray(image) - 0.4 * mean_grey, 0, 1), atol=1e-6)
  assert strong.min() >= 0.0 and strong.max() <= 1.0


def test_saturation_blends_with_greyscale_and_is_identity_for_one_channel():
  image = random_images((8, 8, 3))
  grey = np.asarray(image) @ LUMA
  desat = np.asarray(augment._adjust_saturation(image, 0.0))
  np.testing.assert_allclose(desat, np.repeat(grey[..., None], 3, -1), atol=1e-6)
  sat = np.asarray(augment._adjust_saturation(image, 1.2))
  np.testing.assert_allclose(sat, np.clip(1.2 * np.asarray(image) - 0.2 * grey[..., None], 0, 1), atol=1e-6)
  one = random_images((8, 8, 1))
  np.testing.assert_array_equal(augment._adjust_saturation(one, 0.0), one)


def test_hue_rotation_moves_primaries_and_round_trips():
  red = jnp.asarray([[[1.0, 0.0, 0.0]]])
  np.testing.assert_allclose(augment._adjust_hue(red, 1 / 3), [[[0, 1, 0]]], atol=1e-6)
  np.testing.assert_allclose(augment._adjust_hue(red, -1 / 3), [[[0, 0, 1]]], atol=1e-6)
  image = random_images((8, 8, 3))
  np.testing.assert_allclose(augment._adjust_hue(image, 0.0), image, atol=1e-6)
  twice = augment._adjust_hue(augment._adjust_hue(image, 0.5), 0.5)
  np.testing.assert_allclose(twice, image, atol=1e-5)
  shifted = np.asarray(augment._adjust_hue(image, 0.1))
  # A hue rotation keeps HSV value (max channel) and chroma (max - min).
  np.testing.assert_allclose(shifted.max(-1), np.asarray(image).max(-1), atol=1e-6)
  np.testing.assert_allclose(np.ptp(shifted, -1), np.ptp(np.asarray(image), -1), atol=1e-5)
  one = random_images((8, 8, 1))
  np.testing.assert_array_equal(augment._adjust_hue(one, 0.3), one)


def test_jitter_applies_ops_in_the_drawn_order():
  # Brightness x2 clips the bright half, so "brighten then flatten to the mean"
  # and "flatten then brighten" give different constants.
  image = jnp.asarray(np.linspace(0.2, 0.9, 64, dtype=np.float32).reshape(8, 8, 1))
  x = np.asarray(image)
  decisions = dict(jitter=True, brightness=2.0, contrast=0.0, saturation=1.0, hue=0.0)
  brighten_first = augment._colour_jitter(image, dict(decisions, order=jnp.asarray([0, 1, 2, 3])))
  flatten_first = augment._colour_jitter(image, dict(decisions, order=jnp.asarray([1, 0, 3, 2])))
  np.testing.assert_allclose(brighten_first, np.mean(np.clip(2 * x, 0, 1)), atol=1e-6)
  np.testing.assert_allclose(flatten_first, min(1.0, 2 * x.mean()), atol=1e-6)
  off = augment._colour_jitter(image, dict(decisions, jitter=False, order=jnp.arange(4)))
  np.testing.assert_array_equal(off, image)


def test_jitter_on_rgb_equals_the_four_ops_applied_in_order_for_every_permutation():
  import itertools  # pylint: disable=import-outside-toplevel

  image = jnp.asarray(np.random.RandomState(3).uniform(size=(6, 5, 3)).astype(np.float32))
  decisions = dict(jitter=True, brightness=1.3, contrast=0.6, saturation=1.7, hue=0.08)
  ops = (
    lambda x: augment._adjust_brightness(x, 1.3),
    lambda x: augment._adjust_contrast(x, 0.6),
    lambda x: augment._adjust_saturation(x, 1.7),
    lambda x: augment._adjust_hue(x, 0.08),
  )
  results = set()
  for order in itertools.permutations(range(4)):
    expected = image
    for op in order:
      expected = ops[op](expected)
    got = augment._colour_jitter(image, dict(decisions, order=jnp.asarray(order)))
    np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=str(order))
    results.add(np.asarray(got).round(4).tobytes())
  assert len(results) > 12  # the order matters


def test_blur_kernel_size_is_odd_and_near_ten_percent():
  assert augment.blur_kernel_size(224, 0.1) == 23
  assert augment.blur_kernel_size(28, 0.1) == 3
  assert augment.blur_kernel_size(32, 0.1) == 3
  assert augment.blur_kernel_size(96, 0.1) == 11
  assert augment.blur_kernel_size(8, 0.1) == 3


def test_blur_keeps_constant_image_constant():
  image = jnp.full((40, 40, 3), 0.37, jnp.float32)
  out = np.asarray(augment._gaussian_blur(image, 2.0, 23))
  np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_blur_of_a_point_is_the_normalised_gaussian_outer_product():
  image = np.zeros((21, 21, 1), np.float32)
  image[10, 10, 0] = 1.0
  sigma, size = 1.5, 7
  out = np.asarray(augment._gaussian_blur(jnp.asarray(image), sigma, size))[..., 0]
  taps = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
  taps /= taps.sum()
  expected = np.zeros((21, 21), np.float32)
  expected[7:14, 7:14] = np.outer(taps, taps)
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_blur_preserves_mean_smooths_and_tiny_sigma_is_identity():
  image = random_images((96, 96, 3), seed=3)
  out = np.asarray(augment._gaussian_blur(image, 2.0, 11))
  assert abs(out.mean() - float(np.mean(np.asarray(image)))) < 1e-3
  # White noise blurred by sigma=2 loses most of its variance.
  assert out.std() < 0.3 * float(np.std(np.asarray(image)))
  tiny = augment._gaussian_blur(image, 1e-3, 11)
  np.testing.assert_allclose(tiny, image, atol=1e-6)


def test_crop_box_respects_scale_ratio_and_image_bounds():
  keys = jax.random.split(jax.random.key(1), 2000)
  boxes = np.asarray(jax.vmap(lambda k: augment._draw_crop_box(k, 64, 48, (0.08, 1.0), (3 / 4, 4 / 3)))(keys))
  top, left, h, w = boxes.T
  assert np.all(top >= 0) and np.all(left >= 0)
  assert np.all(top + h <= 64) and np.all(left + w <= 48)
  assert np.all(h >= 1) and np.all(w >= 1)
  assert np.all(boxes == np.round(boxes))
  area = h * w / (64 * 48)
  # Rounding the sides to integers moves the area and aspect slightly.
  assert area.min() >= 0.07 and area.max() <= 1.0
  assert np.all(w / h >= 0.70) and np.all(w / h <= 1.40)
  assert area.min() < 0.12 and area.max() > 0.8


def test_crop_box_falls_back_to_centre_when_no_draw_fits():
  box = np.asarray(augment._draw_crop_box(jax.random.key(0), 8, 64, (0.9, 1.0), (1.0, 1.0)))
  np.testing.assert_array_equal(box, [0, 28, 8, 8])


def test_full_crop_with_unit_scale_and_ratio_reproduces_the_input():
  config = plain_config(3)
  config.crop = True
  config.crop_scale = (1.0, 1.0)
  config.crop_ratio = (1.0, 1.0)
  images = random_images((4, 16, 16, 3))
  np.testing.assert_allclose(run_view(config, images), images, atol=1e-5)


def test_crop_and_resize_samples_the_box_bilinearly():
  image = jnp.asarray(np.arange(64, dtype=np.float32).reshape(8, 8, 1))
  # Box rows 2..5, cols 4..7 at its own size: exactly that slice.
  same = augment._crop_and_resize(image, jnp.asarray([2.0, 4.0, 4.0, 4.0]), 4)
  np.testing.assert_allclose(same, image[2:6, 4:8], atol=1e-4)
  # Halving a linear ramp averages neighbouring pixel pairs.
  half = np.asarray(augment._crop_and_resize(image, jnp.asarray([0.0, 0.0, 8.0, 8.0]), 4))
  expected = np.asarray(image)[0::2, 0::2] + 4.5
  np.testing.assert_allclose(half, expected, atol=1e-4)


# --------------------------------------------------------------- random draws


def test_decision_factors_stay_within_their_ranges():
  d = draws(augment.default_config(3), 1, 2000)
  for name, low, high in (
    ('brightness', 0.6, 1.4),
    ('contrast', 0.6, 1.4),
    ('saturation', 0.8, 1.2),
    ('hue', -0.1, 0.1),
    ('sigma', 0.1, 2.0),
  ):
    values = d[name]
    assert values.min() >= low and values.max() <= high, name
    # ...and actually cover the range rather than sitting at one value.
    assert values.min() < low + 0.05 * (high - low), name
    assert values.max() > high - 0.05 * (high - low), name
  np.testing.assert_array_equal(np.sort(d['order'], axis=1), np.broadcast_to(np.arange(4), (2000, 4)))
  assert len({tuple(o) for o in d['order']}) == 24


def test_per_view_probabilities_are_honoured():
  config = augment.default_config(3)
  count = 4000
  view0 = draws(config, 0, count, seed=10)
  view1 = draws(config, 1, count, seed=11)
  assert view0['blur'].mean() == 1.0
  assert within_sigmas(view1['blur'].mean(), 0.1, count)
  assert view0['solarize'].mean() == 0.0
  assert within_sigmas(view1['solarize'].mean(), 0.2, count)
  for d in (view0, view1):
    assert within_sigmas(d['jitter'].mean(), 0.8, count)
    assert within_sigmas(d['grey'].mean(), 0.2, count)
    assert within_sigmas(d['flip'].mean(), 0.5, count)


def test_pipeline_uses_the_drawn_solarize_and_blur_decisions():
  config = plain_config(1)
  config.solarize_prob = (0.5, 0.5)
  config.blur_prob = (0.5, 0.5)
  config.blur_sigma = (1.0, 2.0)
  batch = 32
  images = ramp_images(batch)
  out = run_view(config, images, view=1, seed=5)
  params = augment.view_params(config, 1)
  keys = jax.random.split(jax.random.key(5), batch)
  d = jax.tree.map(
    np.asarray, jax.vmap(lambda k: augment._draw_decisions(augment._split_example_key(k)[1], params))(keys)
  )
  assert 0 < d['solarize'].sum() < batch and 0 < d['blur'].sum() < batch
  for i in range(batch):
    expected = images[i]
    if d['blur'][i]:
      expected = augment._gaussian_blur(expected, d['sigma'][i], 3)
    expected = augment._solarize(expected, bool(d['solarize'][i]))
    np.testing.assert_allclose(out[i], expected, atol=1e-5)


# ------------------------------------------------------------------ pipeline


def test_greyscale_through_pipeline_gives_equal_channels_equal_to_luma():
  config = plain_config(3)
  config.grey_prob = 1.0
  images = random_images((4, 12, 12, 3))
  out = run_view(config, images)
  expected = np.asarray(images) @ LUMA
  for c in range(3):
    np.testing.assert_allclose(out[..., c], expected, atol=1e-6)


def test_solarize_through_pipeline_on_a_ramp():
  config = plain_config(1)
  config.solarize_prob = (1.0, 1.0)
  images = ramp_images(3)
  x = np.asarray(images)
  out = run_view(config, images, view=0)
  np.testing.assert_array_equal(out[x < 0.5], x[x < 0.5])
  np.testing.assert_allclose(out[x >= 0.5], 1 - x[x >= 0.5], atol=1e-7)


def test_full_jitter_stays_in_unit_range_before_normalisation():
  config = plain_config(3)
  config.jitter_prob = 1.0
  config.brightness = 0.9
  config.contrast = 0.9
  config.saturation = 0.9
  config.hue = 0.5
  images = random_images((32, 10, 10, 3), seed=4)
  out = run_view(config, images)
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert not np.allclose(out, images, atol=1e-3)


def test_normalisation_uses_per_channel_and_broadcast_mean_std():
  images = random_images((2, 8, 8, 3), dtype=np.uint8)
  x = np.asarray(images, np.float32) / 255.0
  config = plain_config(3)
  config.mean = (0.485, 0.456, 0.406)
  config.std = (0.229, 0.224, 0.225)
  expected = (x - np.asarray(config.mean)) / np.asarray(config.std)
  np.testing.assert_allclose(run_view(config, images), expected, atol=1e-5)
  config.mean, config.std = (0.5,), (0.25,)
  np.testing.assert_allclose(run_view(config, images), (x - 0.5) / 0.25, atol=1e-5)
  config.mean = (0.1, 0.2)
  with pytest.raises(ValueError):
    run_view(config, images)


@pytest.mark.parametrize('channels,side,out_size', [(1, 28, None), (3, 32, 24)])
def test_two_views_shape_dtype_and_determinism(channels, side, out_size):
  config = augment.default_config(channels)
  images = random_images((8, side, side, channels), dtype=np.uint8)
  fn = jax.jit(lambda rng, x: augment.two_views(rng, x, config, out_size))
  v0, v1 = fn(jax.random.key(0), images)
  expected_side = side if out_size is None else out_size
  for v in (v0, v1):
    assert v.shape == (8, expected_side, expected_side, channels)
    assert v.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(v)))
  again0, again1 = fn(jax.random.key(0), images)
  np.testing.assert_array_equal(v0, again0)
  np.testing.assert_array_equal(v1, again1)
  other0, _ = fn(jax.random.key(1), images)
  assert not np.allclose(v0, other0)
  assert not np.allclose(v0, v1)
  # two_views is augment_view on the two halves of a split key.
  rng0, _ = jax.random.split(jax.random.key(0))
  direct = jax.jit(lambda r, x: augment.augment_view(r, x, config, 0, out_size))(rng0, images)
  np.testing.assert_allclose(direct, v0, atol=1e-6)


def test_eval_view_is_deterministic_centre_crop():
  images = random_images((2, 28, 28, 1), dtype=np.uint8)
  x = np.asarray(images, np.float32) / 255.0
  config = plain_config(1)
  np.testing.assert_allclose(augment.eval_view(images, config), x, atol=1e-7)
  config.eval_crop_fraction = 0.5
  out = np.asarray(augment.eval_view(images, config, out_size=14))
  np.testing.assert_allclose(out, x[:, 7:21, 7:21], atol=1e-5)
  config.mean, config.std = (0.2860,), (0.3530,)
  resized = np.asarray(augment.eval_view(images, config, out_size=20))
  assert resized.shape == (2, 20, 20, 1) and resized.dtype == np.float32
  np.testing.assert_array_equal(resized, augment.eval_view(images, config, out_size=20))
