"""Depthwise convolutions as shifted multiply-adds (models/depthwise.py): values and gradients equal lax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from simdis_jax import configuration
from simdis_jax.models import blocks, depthwise, network

# (batch, size, channels, kernel, stride): odd and even sizes, where stride 2 leaves a row unread or not.
SHAPES = [
  (2, 7, 5, 3, 1),
  (2, 8, 5, 3, 2),
  (2, 9, 4, 5, 2),
  (3, 14, 6, 5, 1),
  (2, 5, 3, 3, 2),
  (1, 4, 2, 5, 2),
  (2, 28, 3, 3, 2),
  (2, 12, 3, 5, 1),
]


def lax_depthwise(x, kernel, stride, pad):
  """The reference: lax's grouped convolution with one group per channel."""
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((pad, pad), (pad, pad)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=x.shape[-1],
  )


def _value_and_grads(conv, x, kernel, stride, pad, cotangent):
  y = conv(x, kernel, stride, pad)
  grads = jax.grad(lambda x, k: jnp.sum(conv(x, k, stride, pad) * cotangent), argnums=(0, 1))(x, kernel)
  return (y, *grads)


def _inputs(shape, dtype, seed=0):
  n, size, c, k, stride = shape
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((n, size, size, c)), dtype)
  kernel = jnp.asarray(rng.standard_normal((k, k, 1, c)), dtype)
  out = (size + 2 * ((k - 1) // 2) - k) // stride + 1
  cotangent = jnp.asarray(rng.standard_normal((n, out, out, c)), dtype)
  return x, kernel, cotangent


@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradients_equal_lax_in_float64(shape):
  with jax.enable_x64(True):
    x, kernel, cotangent = _inputs(shape, jnp.float64)
    stride, pad = shape[4], (shape[3] - 1) // 2
    ours = _value_and_grads(depthwise.depthwise_conv, x, kernel, stride, pad, cotangent)
    ref = _value_and_grads(lax_depthwise, x, kernel, stride, pad, cotangent)
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), ours, ref):
      assert a.dtype == jnp.float64 and a.shape == b.shape, name
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", [(4, 14, 24, 3, 1), (4, 14, 24, 5, 2), (2, 28, 16, 3, 2)])
def test_values_and_gradients_equal_lax_in_float32(shape):
  x, kernel, cotangent = _inputs(shape, jnp.float32, seed=1)
  stride, pad = shape[4], (shape[3] - 1) // 2
  ours = jax.jit(_value_and_grads, static_argnums=(0, 3, 4))(
    depthwise.depthwise_conv, x, kernel, stride, pad, cotangent
  )
  ref = jax.jit(_value_and_grads, static_argnums=(0, 3, 4))(lax_depthwise, x, kernel, stride, pad, cotangent)
  for name, a, b in zip(("output", "input gradient", "kernel gradient"), ours, ref):
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale, err_msg=name)


def test_module_has_nn_conv_parameters_and_outputs():
  """DepthwiseConv holds nn.Conv's 'kernel' (same shape, same initial values) and computes the same map."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 8))
  ours = blocks.conv_factory("xla", jnp.float32, "shifted")(8, 5, 2, 8, name="conv")
  ref = blocks.conv_factory("xla", jnp.float32, "xla")(8, 5, 2, 8, name="conv")
  assert isinstance(ours, depthwise.DepthwiseConv) and isinstance(ref, nn.Conv)
  params = ours.init(jax.random.PRNGKey(1), x)
  ref_params = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref_params)
  np.testing.assert_array_equal(params["params"]["kernel"], ref_params["params"]["kernel"])
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=0, atol=1e-5)


def test_module_rejects_a_grouped_convolution_that_is_not_depthwise():
  conv = depthwise.DepthwiseConv(8, 3, 1, 1, blocks.conv_kernel_init)
  with pytest.raises(ValueError, match="4 input channels for 8 groups"):
    conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 5, 4)))


def _network(arch, impl, dtype=jnp.float32):
  return network.Network(
    depth=10, width=8, cifar_stem=True, hidden_dim=16, proj_dim=8, arch=arch, dtype=dtype, depthwise_impl=impl
  )


def test_inverted_residual_gradients_equal_lax_in_float64():
  """A strided 5x5 MobileNet block (train-mode BN, hard-swish, squeeze-excite) in float64: every gradient."""
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 4), jnp.float64)
    norm = blocks.batch_norm(True, None, jnp.float64, 0.99, 1e-3)

    def block(impl):
      return blocks.InvertedResidual(
        12,
        6,
        5,
        2,
        jax.nn.hard_swish,
        4,
        nn.relu,
        jax.nn.hard_sigmoid,
        blocks.conv_factory("xla", jnp.float64, impl),
        norm,
        dtype=jnp.float64,
      )

    variables = block("xla").init(jax.random.PRNGKey(1), x, True)
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), variables["params"])

    def loss(impl, p, x):
      out, _ = block(impl).apply(
        {"params": p, "batch_stats": variables["batch_stats"]}, x, True, mutable=["batch_stats"]
      )
      return jnp.sum(jnp.sin(out))

    a = jax.grad(lambda p, x: loss("shifted", p, x), argnums=(0, 1))(params, x)
    b = jax.grad(lambda p, x: loss("xla", p, x), argnums=(0, 1))(params, x)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)


def test_resnets_have_no_grouped_convolutions_so_the_switch_leaves_them_unchanged():
  """The demo's and the study's ResNets compute the same program whatever model.depthwise_impl says."""
  x = jnp.zeros((2, 28, 28, 1))
  programs = []
  for impl in ("xla", "shifted"):
    net = _network("resnet", impl)
    variables = net.init(jax.random.PRNGKey(0), x)
    programs.append(str(jax.make_jaxpr(lambda v, n=net: n.apply(v, x, mutable=["batch_stats"]))(variables)))
  assert programs[0] == programs[1]
  assert "feature_group_count=1" in programs[0] and "DepthwiseConv" not in programs[0]


def test_config_key_is_validated_and_auto_is_shifted_on_cpu():
  c = configuration.base_config()
  assert c.model.depthwise_impl == "auto"
  assert depthwise.from_config(c) == ("shifted" if jax.default_backend() == "cpu" else "xla")
  c.model.depthwise_impl = "im2col"
  with pytest.raises(ValueError, match=r"config.model.depthwise_impl='im2col' .*auto"):
    configuration.validate(c)
