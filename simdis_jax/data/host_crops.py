"""The host's share of the augmentations (streaming input, docs/spec.md "Augmentations (BYOL)"): crop windows,
windowed decoding and the bicubic resize, as tf ops run inside tf.data.

A random resized crop decodes only its window of a JPEG (`decode_and_crop_jpeg`;
other formats are decoded whole and sliced); the evaluation view is a centre
crop of a fraction of the short side. Every crop is drawn from a stateless seed,
so a crop is a function of (seed, step, slot, view) alone.
"""

from typing import Callable, Tuple

import tensorflow as tf

_FULL_BOX = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])


def _decode_window(encoded: tf.Tensor, window_fn: Callable[[tf.Tensor], tf.Tensor], channels: int) -> tf.Tensor:
  """Decodes the window [top, left, h, w] that `window_fn(shape [h, w])` picks; JPEGs decode only the window."""

  def jpeg():
    window = window_fn(tf.io.extract_jpeg_shape(encoded)[:2])
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)

  def other():
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    window = window_fn(tf.shape(image)[:2])
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], channels])

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def random_crop_window(
  shape: tf.Tensor, seed: tf.Tensor, scale: Tuple[float, float], ratio: Tuple[float, float]
) -> tf.Tensor:
  """Random resized crop window [top, left, h, w]: area in `scale`, aspect in `ratio` (10 tries, else whole image)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
    tf.concat([shape, [1]], 0),
    bounding_boxes=_FULL_BOX,
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=ratio,
    area_range=scale,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def centre_crop_window(shape: tf.Tensor, fraction: float) -> tf.Tensor:
  """Centred square of `fraction` of the short side (224/256 = 'resize to 256, centre-crop 224')."""
  side = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(tf.reduce_min(shape), tf.float32)), tf.int32))
  return tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bicubic resize to size × size (DeepMind BYOL's), back to uint8."""
  image = tf.image.resize(image, [size, size], method=tf.image.ResizeMethod.BICUBIC)
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def train_crops(
  encoded: tf.Tensor, example_seed: tf.Tensor, views: int, size: int, scale, ratio, channels: int = 3
) -> tf.Tensor:
  """`views` independent random resized crops of one encoded image: uint8 [views, size, size, C]."""
  crops = []
  for view in range(views):
    seed = tf.random.experimental.stateless_fold_in(example_seed, view)
    crop = _decode_window(encoded, lambda shape, s=seed: random_crop_window(shape, s, scale, ratio), channels)
    crops.append(_resize(crop, size))
  return tf.stack(crops)


def eval_crop(encoded: tf.Tensor, size: int, fraction: float, channels: int = 3) -> tf.Tensor:
  """The deterministic evaluation view: centre crop of `fraction` of the short side, resized: uint8 [size, size, C]."""
  return _resize(_decode_window(encoded, lambda shape: centre_crop_window(shape, fraction), channels), size)
