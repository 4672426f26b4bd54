"""BYOL augmentations that run on the accelerator inside the jitted train step.

docs/spec.md "Augmentations (BYOL)": random resized crop, flip, colour jitter in a
random order, greyscale, Gaussian blur and solarize, then mean/std
normalisation. DeepMind crops on the host; here the crop runs on the device as
well, so one function turns a raw uint8 batch into two training views with no
host work beyond decoding.

Every example is driven by its own PRNG key (``jax.random.split(rng, B)``) and
the per-example pipeline is vmapped over the batch. All random choices are made
up front by ``_draw_decisions`` / ``_draw_crop_box`` and then applied with
``jnp.where`` / ``lax.switch``, so nothing branches in Python on a traced value
and the tests can look at exactly the draws the pipeline used.

The config is read once, in ``view_params``, into plain Python values; the
traced code only sees that dict.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from simdis_jax.data import datasets

# ITU-R BT.601 luma, the weights torchvision and tf.image use for greyscale.
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)

# torchvision's RandomResizedCrop gives up after this many rejected draws and
# falls back to a centre crop; the draws are made all at once here.
_CROP_TRIES = 10

# The section's defaults (BYOL's, with the normalisation of C channels) live with the datasets' statistics.
default_config = datasets.augment_config


def without_crop(config) -> ml_collections.ConfigDict:
  """A copy of `config` for images the host has already cropped (streaming input): no crop, no eval crop."""
  device = ml_collections.ConfigDict(config.to_dict())
  device.crop = False
  device.eval_crop_fraction = 1.0
  return device


def _per_view(value: Any, view: int) -> float:
  """Entry `view` of a per-view setting; a bare number applies to both views."""
  if isinstance(value, (int, float)):
    return float(value)
  return float(tuple(value)[view])


def _pair(value: Any) -> tuple[float, float]:
  low, high = tuple(value)
  return float(low), float(high)


def view_params(config, view: int) -> dict:
  """Plain-Python settings for one view, with blur_prob / solarize_prob picked for `view`."""
  if view not in (0, 1):
    raise ValueError(f'view must be 0 or 1, got {view}')
  return dict(
    crop=bool(config.crop),
    crop_scale=_pair(config.crop_scale),
    crop_ratio=_pair(config.crop_ratio),
    flip=bool(config.flip),
    jitter_prob=float(config.jitter_prob),
    brightness=float(config.brightness),
    contrast=float(config.contrast),
    saturation=float(config.saturation),
    hue=float(config.hue),
    grey_prob=float(config.grey_prob),
    blur_prob=_per_view(config.blur_prob, view),
    blur_sigma=_pair(config.blur_sigma),
    blur_kernel_fraction=float(config.blur_kernel_fraction),
    solarize_prob=_per_view(config.solarize_prob, view),
    mean=tuple(float(m) for m in config.mean),
    std=tuple(float(s) for s in config.std),
  )


# ----------------------------------------------------------------- random draws


def _split_example_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(crop key, decision key) for one example, shared by the pipeline and tests."""
  crop_key, decision_key = jax.random.split(key)
  return crop_key, decision_key


def _draw_decisions(key: jax.Array, params: dict) -> dict:
  """Every random choice for one example except the crop box: booleans, factors, jitter order."""
  # One uniform vector per example, sliced into every draw: many small
  # jax.random calls each expand into their own threefry block and made the
  # jitted step about twice as slow to compile, for no statistical gain.
  u = jax.random.uniform(key, (14,))
  b, c, s, h = (params[k] for k in ('brightness', 'contrast', 'saturation', 'hue'))
  sigma_low, sigma_high = params['blur_sigma']

  def between(value, low, high):
    return low + (high - low) * value

  return dict(
    flip=(u[0] < 0.5) & params['flip'],
    jitter=u[1] < params['jitter_prob'],
    grey=u[2] < params['grey_prob'],
    blur=u[3] < params['blur_prob'],
    solarize=u[4] < params['solarize_prob'],
    # torchvision's ranges: factors are non-negative, hue is in turns.
    brightness=between(u[5], max(0.0, 1 - b), 1 + b),
    contrast=between(u[6], max(0.0, 1 - c), 1 + c),
    saturation=between(u[7], max(0.0, 1 - s), 1 + s),
    hue=between(u[8], -h, h),
    sigma=between(u[9], sigma_low, sigma_high),
    # docs/spec.md: the four jitter ops are applied in a random order per
    # example; ranking i.i.d. uniforms gives a uniform permutation.
    order=jnp.argsort(u[10:14]),
  )


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
  """torchvision's fallback: the largest centred crop whose aspect is clamped into `ratio`."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    return int(round(width / ratio[0])), width
  if in_ratio > ratio[1]:
    return height, int(round(height * ratio[1]))
  return height, width


def _draw_crop_box(
  key: jax.Array, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> jax.Array:
  """Random resized crop box [top, left, h, w] (integer-valued float32), torchvision's rule."""
  u = jax.random.uniform(key, (2 * _CROP_TRIES + 2,))
  area_u, ratio_u = u[:_CROP_TRIES], u[_CROP_TRIES : 2 * _CROP_TRIES]
  top_u, left_u = u[-2], u[-1]
  area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
  # Aspect ratio is drawn uniformly in log space so r and 1/r are equally likely.
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_low + (log_high - log_low) * ratio_u)
  w = jnp.round(jnp.sqrt(area * aspect))
  h = jnp.round(jnp.sqrt(area / aspect))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  # The first draw that fits wins, as in torchvision's sequential loop.
  first = jnp.argmax(fits)
  any_fits = jnp.any(fits)
  fallback_h, fallback_w = _fallback_crop(height, width, ratio)
  h = jnp.where(any_fits, h[first], fallback_h)
  w = jnp.where(any_fits, w[first], fallback_w)
  # Offsets uniform over the integers 0..(side - crop); centred on fallback.
  top = jnp.floor(top_u * (height - h + 1))
  left = jnp.floor(left_u * (width - w + 1))
  top = jnp.where(any_fits, jnp.minimum(top, height - h), (height - h) // 2)
  left = jnp.where(any_fits, jnp.minimum(left, width - w), (width - w) // 2)
  return jnp.stack([top, left, h, w]).astype(jnp.float32)


# ------------------------------------------------------------------ image ops
# All ops take one float image [H, W, C] with values in [0, 1].


def _interpolation_matrix(start, length, in_size: int, out_size: int):
  """[out, in] bilinear weights sampling `length` pixels from `start` onto `out` pixels."""
  # Pixel-centre convention (align_corners=False); samples past the crop's
  # edge are clamped to it, as torchvision's crop-then-resize does.
  centres = start + (jnp.arange(out_size) + 0.5) * (length / out_size) - 0.5
  centres = jnp.clip(centres, start, start + length - 1)
  lower = jnp.floor(centres)
  frac = centres - lower
  upper = jnp.minimum(lower + 1, start + length - 1)
  pixels = jnp.arange(in_size)
  return (pixels[None, :] == lower[:, None]) * (1 - frac)[:, None] + (pixels[None, :] == upper[:, None]) * frac[:, None]


def _crop_and_resize(image: jax.Array, box: jax.Array, out_size: int) -> jax.Array:
  """Bilinear resample of box [top, left, h, w] of `image` to [out, out, C]."""
  height, width, _ = image.shape
  rows = _interpolation_matrix(box[0], box[2], height, out_size)
  cols = _interpolation_matrix(box[1], box[3], width, out_size)
  # Bilinear is separable, so two small matmuls replace a 2-D gather; this is
  # much faster than map_coordinates on CPU and exact for bilinear weights.
  return jnp.einsum('oh,hwc,pw->opc', rows, image, cols, precision=jax.lax.Precision.HIGHEST)


def _flip(image: jax.Array, do_flip) -> jax.Array:
  """Mirror left-right where `do_flip` is true."""
  return jnp.where(do_flip, image[:, ::-1, :], image)


def _greyscale(image: jax.Array) -> jax.Array:
  """BT.601 luma [H, W, 1]; a one-channel image is already grey."""
  if image.shape[-1] == 1:
    return image
  return jnp.tensordot(image, jnp.asarray(LUMA_WEIGHTS, image.dtype), axes=1)[..., None]


def _to_grey(image: jax.Array, do_grey) -> jax.Array:
  """Replace every channel by the luma where `do_grey` is true."""
  return jnp.where(do_grey, jnp.broadcast_to(_greyscale(image), image.shape), image)


def _adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """Scale intensities by `factor`, clipped to [0, 1]."""
  return jnp.clip(image * factor, 0.0, 1.0)


def _adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """Blend with the image's mean grey level by `factor`, clipped to [0, 1]."""
  mean = jnp.mean(_greyscale(image))
  return jnp.clip(factor * image + (1 - factor) * mean, 0.0, 1.0)


def _adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """Blend with the greyscale image by `factor`, clipped; identity for one channel."""
  if image.shape[-1] == 1:
    return image
  return jnp.clip(factor * image + (1 - factor) * _greyscale(image), 0.0, 1.0)


def _rgb_to_hsv(image: jax.Array) -> jax.Array:
  """RGB [..., 3] in [0, 1] to HSV with hue in turns [0, 1)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  chroma = value - jnp.min(image, axis=-1)
  saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
  safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
  hue = jnp.where(
    value == r, (g - b) / safe_chroma, jnp.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma)
  )
  hue = jnp.where(chroma > 0, jnp.mod(hue / 6.0, 1.0), 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """HSV with hue in turns back to RGB [..., 3]."""
  hue, saturation, value = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
  # Branch-free sector formula: each channel is v minus v*s times a clipped
  # triangle wave of the hue, offset by 5, 3, 1 sixths for R, G, B.
  n = jnp.asarray([5.0, 3.0, 1.0], hsv.dtype)
  k = jnp.mod(n + 6.0 * hue, 6.0)
  return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _adjust_hue(image: jax.Array, delta) -> jax.Array:
  """Rotate hue by `delta` turns (in [-0.5, 0.5]); identity for one channel."""
  if image.shape[-1] == 1:
    return image
  hsv = _rgb_to_hsv(image)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0))
  return jnp.clip(_hsv_to_rgb(hsv), 0.0, 1.0)


def _colour_jitter(image: jax.Array, decisions: dict) -> jax.Array:
  """Brightness, contrast, saturation and hue in the per-example order `decisions['order']`."""
  order = decisions['order']  # a permutation of 0..3: brightness, contrast, saturation, hue
  cheap = (
    lambda x: _adjust_brightness(x, decisions['brightness']),
    lambda x: _adjust_contrast(x, decisions['contrast']),
    lambda x: _adjust_saturation(x, decisions['saturation']),
  )
  hue_position = jnp.argmax(order == 3)

  def cheap_op_at(position, x, wanted):
    # Under vmap a switch evaluates every branch and selects; the three cheap
    # ops cost little, so they may run at every position.
    op = order[position]
    y = jax.lax.switch(jnp.minimum(op, 2), cheap, x)
    return jnp.where(wanted & (op != 3), y, x)

  # The hue (RGB -> HSV -> RGB) is most of the cost: run it exactly once, with
  # the cheap ops drawn before it ahead and those drawn after it behind. A
  # select over all four ops at each of the four positions would run it 4×.
  # fori_loops (not unrolled steps) keep the compiled program small.
  x = jax.lax.fori_loop(0, 3, lambda p, x: cheap_op_at(p, x, p < hue_position), image)
  x = _adjust_hue(x, decisions['hue'])
  x = jax.lax.fori_loop(1, 4, lambda p, x: cheap_op_at(p, x, p > hue_position), x)
  return jnp.where(decisions['jitter'], x, image)


def blur_kernel_size(side: int, fraction: float) -> int:
  """Odd Gaussian kernel side closest to `fraction * side`, at least 3 (23 for 224)."""
  size = max(3, int(round(fraction * side)))
  return size if size % 2 == 1 else size + 1


def _gaussian_blur(image: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur with reflect padding, so constant images stay constant."""
  radius = kernel_size // 2
  offsets = jnp.arange(-radius, radius + 1, dtype=image.dtype)
  # Guard sigma -> 0: the kernel tends to a delta, i.e. the identity.
  sigma = jnp.maximum(sigma, 1e-6)
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  weights = weights / jnp.sum(weights)
  height, width, _ = image.shape
  # The kernel is traced (sigma is drawn per example), so the convolution is a
  # static loop of shifted slices; kernels are ~10% of the side, so this is cheap.
  padded = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode='reflect')
  image = sum(weights[i] * padded[i : i + height] for i in range(kernel_size))
  padded = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode='reflect')
  return sum(weights[i] * padded[:, i : i + width] for i in range(kernel_size))


def _solarize(image: jax.Array, do_solarize) -> jax.Array:
  """Invert values at or above 0.5 where `do_solarize` is true (docs/spec.md threshold)."""
  return jnp.where(do_solarize & (image >= 0.5), 1.0 - image, image)


def _normalise(image: jax.Array, mean: tuple, std: tuple) -> jax.Array:
  """(x - mean) / std per channel; a length-1 mean/std applies to every channel."""
  channels = image.shape[-1]
  if len(mean) not in (1, channels) or len(std) not in (1, channels):
    raise ValueError(f'mean {mean} / std {std} do not match {channels} channels')
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (image - mean) / std


def _to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 0..255 scaled to [0, 1]; float input is taken to be in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


# ------------------------------------------------------------------- pipeline


def _augment_example(key: jax.Array, image: jax.Array, params: dict, out_size: int) -> jax.Array:
  """One example [H, W, C] in [0, 1] to one augmented view [out, out, C], not yet normalised."""
  height, width, _ = image.shape
  crop_key, decision_key = _split_example_key(key)
  decisions = _draw_decisions(decision_key, params)
  if params['crop']:
    box = _draw_crop_box(crop_key, height, width, params['crop_scale'], params['crop_ratio'])
    image = _crop_and_resize(image, box, out_size)
  elif (height, width) != (out_size, out_size):
    box = jnp.asarray([0, 0, height, width], jnp.float32)
    image = _crop_and_resize(image, box, out_size)
  image = _flip(image, decisions['flip'])
  image = _colour_jitter(image, decisions)
  image = _to_grey(image, decisions['grey'])
  kernel_size = blur_kernel_size(out_size, params['blur_kernel_fraction'])
  image = jnp.where(decisions['blur'], _gaussian_blur(image, decisions['sigma'], kernel_size), image)
  return _solarize(image, decisions['solarize'])


def _default_out_size(images: jax.Array, out_size: int | None) -> int:
  return min(images.shape[1], images.shape[2]) if out_size is None else out_size


def augment_view(rng, images, config, view: int, out_size: int | None = None) -> jnp.ndarray:
  """One BYOL view of a [B, H, W, C] batch: float32 [B, out, out, C], normalised."""
  params = view_params(config, view)
  out_size = _default_out_size(images, out_size)
  keys = jax.random.split(rng, images.shape[0])
  views = jax.vmap(_augment_example, in_axes=(0, 0, None, None))(keys, _to_unit_float(images), params, out_size)
  return _normalise(views, params['mean'], params['std'])


def two_views(rng, images, config, out_size=None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Views v (view 0) and v' (view 1) of the same batch, with independent keys."""
  rng0, rng1 = jax.random.split(rng)
  return (augment_view(rng0, images, config, 0, out_size), augment_view(rng1, images, config, 1, out_size))


def two_views_of_crops(rng, crops, config) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Views v and v' of host-cropped pairs [B, 2, S, S, C] (streaming input): every op but the crop."""
  config = without_crop(config)
  rng0, rng1 = jax.random.split(rng)
  return (augment_view(rng0, crops[:, 0], config, 0), augment_view(rng1, crops[:, 1], config, 1))


def eval_view(images, config, out_size=None) -> jnp.ndarray:
  """Deterministic view: centred square crop of `eval_crop_fraction`, resized, normalised."""
  images = _to_unit_float(images)
  _, height, width, _ = images.shape
  out_size = _default_out_size(images, out_size)
  # A centred square of fraction f of the short side, resized to out_size, is
  # "resize short side to out/f, centre-crop out" (224 / 256 for ImageNet).
  side = max(1, int(round(float(config.eval_crop_fraction) * min(height, width))))
  box = jnp.asarray([(height - side) // 2, (width - side) // 2, side, side], jnp.float32)
  if (side, side) != (height, width) or side != out_size:
    images = jax.vmap(_crop_and_resize, in_axes=(0, None, None))(images, box, out_size)
  return _normalise(images, tuple(config.mean), tuple(config.std))
