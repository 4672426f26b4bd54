"""A network's own input normalisation and channel count, when they differ from the data's (an imported teacher).

The data pipeline normalises every view with config.data.augment.mean/std and gives the data's
channels (1 for Fashion-MNIST). A network trained elsewhere (an imported or zoo teacher) expects
its own: config.model.<net>.input_mean / input_std (the per-channel normalisation it was trained
with; () = the data's) and in_channels (0 = the data's). The network then undoes the data's
normalisation and applies its own, one affine map x * scale + shift per channel, before its
encoder; a grey image given to a 3-channel network is replicated to R = G = B first (what
torchvision's Grayscale(num_output_channels=3) gives). Both unset: no map, the network as before.
"""

from typing import Sequence, Tuple

import jax.numpy as jnp

from simdis_jax.models import archs

# The section keys (configuration.network_config) and what a section written without them means: the data's.
INPUT_DEFAULTS = archs.INPUT_DEFAULTS


def affine(section, data_mean: Sequence[float], data_std: Sequence[float]) -> Tuple:
  """((scale...), (shift...), channels) of a config.model.<net> section against the data's mean/std; () if none."""
  mean, std = tuple(section.get("input_mean", ()) or ()), tuple(section.get("input_std", ()) or ())
  channels = int(section.get("in_channels", 0) or 0)
  data_mean, data_std = tuple(float(v) for v in data_mean), tuple(float(v) for v in data_std)
  if not mean and not std and channels in (0, len(data_mean)):
    return ()
  channels = channels or len(data_mean)
  if len(data_mean) not in (1, channels):
    raise ValueError(
      f"The network takes {channels}-channel images but the data has {len(data_mean)}: only a grey "
      "image can be given to a colour network (replicated to R = G = B)."
    )
  mean, std = mean or data_mean, std or data_std
  if len(mean) != channels or len(std) != channels:
    raise ValueError(f"input_mean={mean} / input_std={std} must have one value per input channel ({channels}).")
  d_mean = data_mean * channels if len(data_mean) == 1 else data_mean
  d_std = data_std * channels if len(data_std) == 1 else data_std
  scale = tuple(ds / s for ds, s in zip(d_std, std))
  shift = tuple((dm - m) / s for dm, m, s in zip(d_mean, mean, std))
  return scale, shift, channels


def apply(x, adapter: Tuple):
  """The network's input from the pipeline's normalised view x [..., C_data] (no-op for an empty adapter)."""
  if not adapter:
    return x
  scale, shift, channels = adapter
  if x.shape[-1] != channels:  # grey data, colour network
    x = jnp.broadcast_to(x, x.shape[:-1] + (channels,))
  return x * jnp.asarray(scale, x.dtype) + jnp.asarray(shift, x.dtype)
