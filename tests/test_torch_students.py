"""The plain-torch students timed beside the JAX encoders (tools/benchmark/torch_students.py) are the same networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simdis_jax.models import encoders

torch = pytest.importorskip("torch")
from simdis_jax.tools.benchmark import torch_students  # noqa: E402  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize(
  "arch,size,channels",
  [("mobilenet_v3_small", 28, 1), ("mobilenet_v3_large", 224, 3), ("efficientnet_b0", 28, 1), ("vit_tiny", 28, 1)],
)
def test_parameter_counts_and_feature_shapes_equal_the_jax_encoders(arch, size, channels):
  small = size < 64
  net = encoders.encoder(arch, encoders.EncoderOptions(cifar_stem=small, patch_size=4 if small else 16))
  x = jnp.zeros((2, size, size, channels))
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  jax_count = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes["params"]))
  jax_feature = jax.eval_shape(lambda v: net.apply(v, x, train=False), shapes).shape
  model = torch_students.build(arch, size, channels)
  torch_count = sum(p.numel() for p in model.parameters())
  assert torch_count == jax_count
  assert tuple(model(torch.zeros(2, channels, size, size)).shape) == jax_feature
