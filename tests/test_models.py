"""ResNet family, heads and network layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simdis_jax.models import resnet
from simdis_jax.models.network import Network


def param_count(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize("depth,expected", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)])
def test_resnet_parameter_counts_match_torchvision_without_fc(depth, expected):
  model = resnet.resnet(depth)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
  assert param_count(variables["params"]) == expected


@pytest.mark.parametrize("depth", [101, 152, 200])
def test_deep_resnets_build_with_2048_features(depth):
  model = resnet.resnet(depth)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)), train=False)[0])
  assert out.shape == (2, 2048)


def test_unknown_depth_is_a_clear_error():
  with pytest.raises(ValueError, match="Unknown ResNet depth 19"):
    resnet.resnet(19)


def test_pytorch_style_padding_gives_the_imagenet_feature_map_sizes():
  model = resnet.resnet(18, width=8)
  x = jnp.zeros((1, 224, 224, 3))
  # Shapes only: traced abstractly, nothing computed at 224 px.
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
  _, inter = jax.eval_shape(lambda v: model.apply(v, x, train=False, capture_intermediates=True), variables)
  shapes = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items() if k.startswith("stage")}
  assert shapes["stage1_block2"] == (1, 56, 56, 8)
  assert shapes["stage4_block2"] == (1, 7, 7, 64)


def test_cifar_stem_keeps_the_resolution_and_width_scales_features():
  model = resnet.resnet(10, width=4, cifar_stem=True)
  x = jnp.zeros((3, 28, 28, 1))
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=False))
  assert out.shape == (3, 32)
  assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 1, 4)


def test_conv_init_is_kaiming_normal_fan_out():
  model = resnet.resnet(18, width=64)
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))()
  k = np.asarray(variables["params"]["stage3_block2"]["Conv_1"]["kernel"])  # 3x3, 256 -> 256
  assert np.std(k) == pytest.approx(np.sqrt(2.0 / (3 * 3 * 256)), rel=0.03)
  bn = variables["params"]["stage3_block2"]["BatchNorm_0"]
  assert np.all(np.asarray(bn["scale"]) == 1.0) and np.all(np.asarray(bn["bias"]) == 0.0)


def test_network_heads_and_ema_subtree():
  online = Network(10, 4, True, 32, 16, heads=("sema_dv", "t_sv"))
  ema = Network(10, 4, True, 32, 16)
  x = jnp.ones((4, 16, 16, 1))
  out, v = online.init_with_output(jax.random.PRNGKey(0), x, train=False)
  assert set(v["params"]) == {"encoder", "projector", "predictor_sema_dv", "predictor_t_sv"}
  assert out["feature"].shape == (4, 32) and out["projection"].shape == (4, 16)
  assert {h: p.shape for h, p in out["predictions"].items()} == {"sema_dv": (4, 16), "t_sv": (4, 16)}
  v_ema = jax.eval_shape(lambda: ema.init(jax.random.PRNGKey(0), x, train=False))
  assert set(v_ema["params"]) == {"encoder", "projector"}
  # The EMA net runs on the online net's encoder + projector params.
  sub = {
    "params": {k: v["params"][k] for k in ("encoder", "projector")},
    "batch_stats": {k: v["batch_stats"][k] for k in ("encoder", "projector")},
  }
  np.testing.assert_allclose(ema.apply(sub, x, train=False)["projection"], out["projection"], rtol=1e-6)
  # Predictors see the raw projection: hidden layer is 32 wide, output 16.
  assert v["params"]["predictor_sema_dv"]["dense1"]["kernel"].shape == (16, 32)


CONV_CASES = [  # kernel, strides, padding, in, out, input size: ResNet's 3x3 (stride 1, 2), 1x1 (1, 2), 7x7/2 stem
  ((3, 3), (1, 1), ((1, 1), (1, 1)), 8, 16, 9),
  ((3, 3), (2, 2), ((1, 1), (1, 1)), 8, 16, 9),
  ((3, 3), (2, 2), ((1, 1), (1, 1)), 8, 16, 8),
  ((3, 3), (1, 1), ((1, 1), (1, 1)), 8, 16, 2),
  ((1, 1), (1, 1), "VALID", 8, 16, 8),
  ((1, 1), (2, 2), "VALID", 8, 16, 7),
  ((7, 7), (2, 2), ((3, 3), (3, 3)), 3, 8, 16),
]


@pytest.mark.parametrize("vjp", [True, False])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0][0]}x{c[0][1]}s{c[1][0]}_{c[5]}px")
def test_matmul_conv_matches_lax_conv_forward_and_gradients(case, vjp):
  kernel, strides, padding, cin, cout, size = case
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  ref = nn.Conv(cout, kernel, strides, padding=padding, use_bias=False)
  ours = resnet.Conv(cout, kernel, strides, padding=padding, custom_vjp=vjp)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, cin))
  variables = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, variables)
  cotangent = jax.random.normal(jax.random.PRNGKey(2), ref.apply(variables, x).shape)

  def loss(module):
    return jax.jit(jax.value_and_grad(lambda v, x: jnp.sum(module.apply(v, x) * cotangent), argnums=(0, 1)))

  (l_ref, (gv_ref, gx_ref)), (l_ours, (gv_ours, gx_ours)) = loss(ref)(variables, x), loss(ours)(variables, x)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l_ours, l_ref, rtol=1e-5)
  np.testing.assert_allclose(gv_ours["params"]["kernel"], gv_ref["params"]["kernel"], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(gx_ours, gx_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["matmul", "mixed"])
def test_matmul_and_lax_resnets_share_parameters_and_outputs(impl):
  # 32 px: mixed runs the stem and stage 1 (16x16, 8x8 maps) as lax convolutions, stages 2-4 as matmuls.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  lax_net, mm_net = resnet.resnet(18, width=8), resnet.resnet(18, width=8, conv_impl=impl)
  # Compiled whole, not op by op: run eagerly, each op of a ResNet-18 is dispatched apart (twice the CPU time).
  variables = jax.jit(lax_net.init)(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, jax.eval_shape(mm_net.init, jax.random.PRNGKey(1), x)) == jax.tree.map(
    jnp.shape, variables
  )

  # Inference-mode BN: train-mode BN over 2x1x1 maps of the last stage would amplify float rounding.
  def grads(net):
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(net.apply({**variables, "params": p}, x, train=False) ** 2)))(
      variables["params"]
    )

  (loss_mm, g_mm), (loss_lax, g_lax) = grads(mm_net), grads(lax_net)
  np.testing.assert_allclose(loss_mm, loss_lax, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_mm), jax.tree.leaves(g_lax)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("size", [8, 9, 32])
def test_slice_max_pool_matches_flax_max_pool_with_ties(size):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 5))
  x = jnp.round(jax.nn.relu(x) * 2) / 2  # ties, as after a ReLU: the gradient must go to the first maximum only
  ref = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # noqa: E731
  ours = lambda x: resnet.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))  # noqa: E731
  cotangent = jax.random.normal(jax.random.PRNGKey(1), ref(x).shape)
  np.testing.assert_array_equal(ours(x), ref(x))
  # Gradients compiled whole: op by op, the slices' VJPs dispatch dozens of tiny programs.
  np.testing.assert_allclose(
    jax.jit(jax.grad(lambda x: jnp.sum(ours(x) * cotangent)))(x),
    jax.jit(jax.grad(lambda x: jnp.sum(ref(x) * cotangent)))(x),
    rtol=1e-6,
    atol=1e-6,
  )


@pytest.mark.parametrize("conv_vjp,slice_pool", [(True, True), (False, False), (True, False)])
def test_matmul_switches_travel_from_the_config_into_the_resnet(conv_vjp, slice_pool):
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  from simdis_jax.state import build_networks  # pylint: disable=import-outside-toplevel

  c = tiny_config("simdis_on", "simdis_2v")
  c.model.conv_impl = "matmul"
  c.model.matmul_conv_vjp, c.model.matmul_max_pool = conv_vjp, slice_pool
  nets = build_networks(c)
  assert {(n.matmul_conv_vjp, n.matmul_max_pool) for n in nets} == {(conv_vjp, slice_pool)}
  # In the traced program: the hand-written VJPs are custom_vjp calls; flax's max-pool is a reduce_window.
  net = resnet.resnet(10, width=4, conv_impl="matmul", matmul_conv_vjp=conv_vjp, matmul_max_pool=slice_pool)
  x = jnp.zeros((2, 16, 16, 3))
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  program = str(jax.make_jaxpr(lambda v: net.apply(v, x, train=False))(variables))
  assert ("custom_vjp_call" in program) == (conv_vjp or slice_pool)
  assert ("reduce_window_max" in program) == (not slice_pool)


def test_mixed_convs_are_lax_on_large_maps_and_matmuls_on_small_ones():
  # ResNet-10 at 32 px: stem 16x16 and stage 1 8x8 (lax: 3 convolutions), stages 2-4 at 4, 2, 1 px (matmul).
  net = resnet.resnet(10, width=4, conv_impl="mixed")
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), x, train=False))
  program = str(jax.make_jaxpr(lambda v: net.apply(v, x, train=False))(variables))
  assert program.count("conv_general_dilated[") == 3
  # Six 3x3 and three 1x1 (shortcut) convolutions below 8x8, and the slice max-pool.
  assert program.count("custom_vjp_call") == 6 + 3 + 1
  assert resnet._out_size((16, 16), (3, 3), (2, 2), ((1, 1), (1, 1))) == (8, 8)


def test_mixed_and_lax_mobilenet_v3_share_parameters_outputs_and_gradients():
  """What conv_impl's auto gives the mobile networks on CPU (mixed: their 1x1 convolutions as dots) computes
  lax's network: same parameter tree, outputs and gradients equal to float32 rounding."""
  from simdis_jax.models import mobilenet_v3  # pylint: disable=import-outside-toplevel

  x = jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))
  lax_net = mobilenet_v3.MobileNetV3("small", True, conv_impl="xla", depthwise_impl="shifted")
  mixed_net = mobilenet_v3.MobileNetV3("small", True, conv_impl="mixed", depthwise_impl="shifted")
  variables = jax.jit(lax_net.init)(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, jax.eval_shape(mixed_net.init, jax.random.PRNGKey(1), x)) == jax.tree.map(
    jnp.shape, variables
  )
  program = str(jax.make_jaxpr(lambda v: mixed_net.apply(v, x, train=False))(variables))
  assert program.count("conv_general_dilated[") == 1  # the 3x3 stem on its 28x28 map; every 1x1 is a dot

  def grads(net):
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(net.apply({**variables, "params": p}, x, train=False) ** 2)))(
      variables["params"]
    )

  (loss_mixed, g_mixed), (loss_lax, g_lax) = grads(mixed_net), grads(lax_net)
  np.testing.assert_allclose(loss_mixed, loss_lax, rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_mixed), jax.tree.leaves(g_lax)):
    scale = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale, err_msg=jax.tree_util.keystr(path))


def test_mobile_networks_dense_convolutions_follow_mixed_too():
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from simdis_jax.models import blocks  # pylint: disable=import-outside-toplevel

  conv = blocks.conv_factory("mixed", jnp.float32)
  dense, depthwise = conv(16, 3), conv(16, 3, groups=16)
  assert isinstance(dense, resnet.Conv) and dense.lax_min_size == resnet.LAX_MIN_SIZE
  assert isinstance(depthwise, nn.Conv)
  assert blocks.conv_factory("matmul", jnp.float32)(16, 3).lax_min_size == 0
