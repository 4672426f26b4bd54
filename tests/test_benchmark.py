"""The benchmark's behaviour (never its timings): fields, FLOP counts, bf16 mode, no recompilation."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from conftest import tiny_config
from simdis_jax import configuration, flops, parallel
from simdis_jax.models import network
from simdis_jax.tools.benchmark import compare, table1, timing


def test_benchmark_runs_two_steps_and_its_json_has_every_field():
  c = tiny_config("byol", "byol")
  result = timing.benchmark(c, steps=2, warmup=1, matmul_sizes=(128,))
  line = json.loads(json.dumps(result))
  assert set(timing.FIELDS) <= set(line), set(timing.FIELDS) - set(line)
  assert line["devices"] == jax.device_count() and line["global_batch"] == 16 and line["steps_timed"] == 2
  assert line["flops_per_step"] > 0 and 0 < line["fraction_of_peak"] and line["images_per_s"] > 0
  assert line["compute_dtype"] == "float32" and np.isfinite(line["final_loss"])
  text = timing.format_result(result)
  assert "images/s" in text and "of the measured matmul peak" in text
  assert 0 < line["fraction_of_peak_contemporaneous"] and line["matmul_peak_contemporaneous_flops_per_s"] > 0


def test_resnet_forward_macs_match_table1_at_224px():
  for depth, paper_gmacs in ((18, table1.PAPER_STUDENT_GMACS), (50, table1.PAPER_TEACHER_GMACS)):
    counts = flops.forward_flops(configuration.network_config(depth, 64, False, 4096, 256), 224)
    assert abs(counts["encoder_macs"] / 1e9 / paper_gmacs - 1) < 0.05, (depth, counts)
    # XLA skips the taps on zero padding, so its count sits a little lower (6% for ResNet-18).
    assert 0.9 < counts["encoder_flops"] / 2 / counts["encoder_macs"] <= 1.0, (depth, counts)
  # One predictor MLP 256 -> 4096 -> 256: six of them are the paper's "12M" of SimDis-On-7v.
  assert counts["predictor_macs"] == 2 * 256 * 4096


def test_step_flops_equal_xlas_count_of_the_lowered_step_and_the_cpu_fallback_gives_the_same(monkeypatch):
  # The one step-FLOP counter (run_info.json, the benchmark). On the CPU it is XLA's cost analysis
  # of the lowered step, one device's program under SPMD. The GPU backend returns no cost analysis
  # for an unoptimised program: the count then comes from lowering one device's share of the step
  # for the CPU, and must be the same number.
  c = configuration.validate(tiny_config("simdis_on", "simdis_2v"))
  mesh = parallel.make_mesh(jax.devices()[:2])
  _, state, train_step = timing.build_step(c, mesh)
  images, labels = timing.synthetic_batch(c, mesh)
  analysis = train_step.lower(state, images, labels).cost_analysis()
  expected = float(analysis["flops"])
  assert expected > 1e8
  assert flops.step_flops(c, mesh, state, images, labels, train_step) == expected
  assert flops.step_flops(c, mesh, state, images, labels) == expected  # built from the config alone
  real, calls = flops.flops_of, []

  def no_analysis_first(program):
    calls.append(program)
    return float("nan") if len(calls) == 1 else real(program)

  monkeypatch.setattr(flops, "flops_of", no_analysis_first)
  fallback = flops.step_flops(c, mesh, state, images, labels, train_step)
  assert len(calls) == 2
  assert abs(fallback / expected - 1) < 0.01, (fallback, expected)
  # The benchmark's reference counts the whole mesh: one device's count times the devices.
  monkeypatch.setattr(flops, "flops_of", real)
  assert timing.reference_step_flops(c, mesh, state, images, labels, train_step) == 2 * expected


def _run_steps(config, steps=3, total_steps=10):
  mesh = parallel.make_mesh(jax.devices()[:2])
  _, state, train_step = timing.build_step(config, mesh, total_steps=total_steps)
  images, labels = timing.synthetic_batch(config, mesh)
  losses = []
  for _ in range(steps):
    state, metrics = train_step(state, images, labels)
    losses.append(float(metrics["loss"]))
  return state, np.array(losses), train_step


def test_bfloat16_compute_keeps_float32_params_and_tracks_the_float32_loss():
  c = tiny_config("simdis_on", "simdis_2v")
  c.model.compute_dtype = "bfloat16"
  state, losses_bf16, _ = _run_steps(c)
  for tree in (state.student.params, state.teacher.ema_params, state.student.batch_stats, state.opt_state):
    assert {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}
  c.model.compute_dtype = "float32"
  _, losses_f32, _ = _run_steps(c)
  assert np.all(np.isfinite(losses_bf16))
  np.testing.assert_allclose(losses_bf16, losses_f32, atol=0.05)


def test_auto_compute_dtype_is_float32_on_cpu():
  c = tiny_config()
  assert c.model.compute_dtype == "auto" and network.compute_dtype(c) == jnp.float32
  c.model.compute_dtype = "bfloat16"
  assert network.compute_dtype(configuration.validate(c)) == jnp.bfloat16


def test_auto_conv_impl_on_cpu_is_mixed_for_wide_resnets_and_the_mobile_networks():
  c = tiny_config()  # widths 4 and 8: lax convolutions are faster there
  assert {network.conv_impl(c, n) for n in (c.model.student, c.model.teacher)} == {"xla"}
  wide = configuration.network_config(18, 64, False, 4096, 256)
  assert network.conv_impl(c, wide) == "mixed"
  # The mobile networks whatever their width key: their 1x1 convolutions as dots (docs/architectures.md).
  for arch in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"):
    c.model.student.arch = arch
    assert network.conv_impl(c, c.model.student) == "mixed"
  c.model.student.arch = "resnet"
  mobile = configuration.network_config(18, 8, True, 64, 32, arch="mobilenet_v3_small")
  for impl in ("xla", "matmul"):
    c.model.conv_impl = impl
    assert network.conv_impl(configuration.validate(c), wide) == impl
    assert network.conv_impl(c, mobile) == impl


def test_train_step_compiles_once_across_steps():
  # build_step's default schedule length: the same program as test_compare's first variant, which then
  # finds it in the persistent compilation cache instead of compiling it again.
  state, _, train_step = _run_steps(configuration.validate(tiny_config("byol", "byol")), steps=3, total_steps=1000)
  assert int(state.step) == 3
  assert train_step._cache_size() == 1  # pylint: disable=protected-access


def test_table1_training_rule_gives_the_papers_offline_and_multiview_ratios():
  p = table1.predicted_train_gflops(
    table1.PAPER_TEACHER_GMACS, table1.PAPER_STUDENT_GMACS, table1.PAPER_MULTIVIEW_GMACS / 6
  )
  assert p["SimDis-On"] == 16 * (4.1 + 1.8)
  assert abs(p["offline step"] / p["SimDis-On"] - (2 * 4.1 + 8 * 1.8) / (8 * 4.1 + 8 * 1.8)) < 1e-9
  assert 1.0 < p["SimDis-On-7v"] / p["SimDis-On"] < 1.01  # the extra views are nearly free
  # Offline = the BYOL teacher run (16 T) + the student step against the frozen teacher (4 T + 16 S).
  assert abs(p["SimDis-Off"] - (20 * 4.1 + 16 * 1.8)) < 1e-9


def test_compare_times_variants_alternately_and_reports_each():
  c = tiny_config("byol", "byol")
  variant = "model.conv_impl='matmul';train.batch_size=32"
  result = compare.compare(c, ["", variant], rounds=2, warmup=1, devices=jax.devices()[:2], matmul_sizes=(128,))
  line = json.loads(json.dumps(result))
  assert [v["variant"] for v in line["variants"]] == ["(as given)", variant]
  for v in line["variants"]:
    assert set(compare.COMPARE_FIELDS) <= set(v), set(compare.COMPARE_FIELDS) - set(v)
    assert v["steps_timed"] == 2 and v["flops_per_step"] > 0 and v["time_ratio_to_first"] > 0
  assert [v["conv_impl"] for v in line["variants"]] == ["xla", "matmul"]
  assert [v["global_batch"] for v in line["variants"]] == [16, 32]
  # Both count the lax-convolution step; twice the batch is twice the work, give or take the optimizer.
  assert 1.9 < line["variants"][1]["flops_per_step"] / line["variants"][0]["flops_per_step"] < 2.0
  assert line["variants"][0]["time_ratio_to_first"] == 1.0
  assert c.model.conv_impl == "auto" and c.train.batch_size == 16  # the given config is left as it was
  assert "ratio" in compare.format_compare(result)


def test_overrides_parse_literals_and_reject_unknown_keys():
  assert compare.parse_overrides("model.conv_impl=xla; train.batch_size=64;config.seed=3") == {
    "model.conv_impl": "xla",
    "train.batch_size": 64,
    "config.seed": 3,
  }
  c = tiny_config()
  changed = compare.apply_overrides(c, {"model.conv_impl": "xla", "config.seed": 3})
  assert (changed.model.conv_impl, changed.seed, c.model.conv_impl) == ("xla", 3, "auto")
  import pytest  # pylint: disable=import-outside-toplevel

  for bad in ({"model.conv_implementation": "xla"}, {"resnet.MATMUL_CONV_VJP": False}, {"seed.x": 1}):
    with pytest.raises(ValueError, match="Unknown config key"):
      compare.apply_overrides(c, bad)
  with pytest.raises(ValueError, match="not key=value"):
    compare.parse_overrides("model.conv_impl")
