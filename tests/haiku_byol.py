"""DeepMind's BYOL network modules rebuilt with dm-haiku, shared by the DeepMind import and recipe tests.

byol/utils/networks.py's ResNetTorso (v1, use_projection in all four groups; its layers made in __init__,
hence the '/~/' names) and MLP (Linear with bias -> BatchNorm -> relu -> Linear without bias; its layers
made in __call__: 'projector/linear', ...), with a width for test speed. Built on first use, so that
importing this module needs no haiku.
"""

import functools

import jax
import jax.numpy as jnp

from simdis_jax.models import resnet

BN = dict(decay_rate=0.9, eps=1e-5, create_scale=True, create_offset=True)  # configs/byol.py:47-56 (one device)


@functools.lru_cache(maxsize=None)
def modules():
  """(Torso, MLP): Torso(depth, width, name), MLP(hidden, out, name)."""
  import haiku as hk  # pylint: disable=import-outside-toplevel

  class Torso(hk.Module):
    """networks.py:53-151 ResNetTorso."""

    def __init__(self, depth, width, name):
      super().__init__(name=name)
      bottleneck = depth >= 50
      self.initial_conv = hk.Conv2D(width, 7, stride=2, with_bias=False, padding="SAME", name="initial_conv")
      self.initial_batchnorm = hk.BatchNorm(name="initial_batchnorm", **BN)
      self.groups = [
        hk.nets.ResNet.BlockGroup(
          channels=width * 2**i * (4 if bottleneck else 1),
          num_blocks=n,
          stride=1 if i == 0 else 2,
          bn_config=BN,
          resnet_v2=False,
          bottleneck=bottleneck,
          use_projection=True,
          name=f"block_group_{i}",
        )
        for i, n in enumerate(resnet.STAGE_SIZES[depth])
      ]

    def __call__(self, x, is_training):
      x = jax.nn.relu(self.initial_batchnorm(self.initial_conv(x), is_training))
      x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
      for group in self.groups:
        x = group(x, is_training, False)
      return jnp.mean(x, axis=(1, 2))

  class MLP(hk.Module):
    """networks.py:25-45: Linear (bias) -> BatchNorm -> relu -> Linear without bias."""

    def __init__(self, hidden, out, name):
      super().__init__(name=name)
      self.hidden, self.out = hidden, out

    def __call__(self, x, is_training):
      x = jax.nn.relu(hk.BatchNorm(**BN)(hk.Linear(self.hidden, with_bias=True)(x), is_training))
      return hk.Linear(self.out, with_bias=False)(x)

  return Torso, MLP
