"""The benchmark's behaviour (never its timings): fields, FLOP counts, bf16 mode, no recompilation."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from conftest import tiny_config
from simdis_jax import benchmark, configuration, parallel


def test_benchmark_runs_two_steps_and_its_json_has_every_field():
  c = tiny_config("byol", "byol")
  result = benchmark.benchmark(c, steps=2, warmup=1, matmul_sizes=(128,))
  line = json.loads(json.dumps(result))
  assert set(benchmark.FIELDS) <= set(line), set(benchmark.FIELDS) - set(line)
  assert line["devices"] == jax.device_count() and line["global_batch"] == 16 and line["steps_timed"] == 2
  assert line["flops_per_step"] > 0 and 0 < line["fraction_of_peak"] and line["images_per_s"] > 0
  assert line["compute_dtype"] == "float32" and np.isfinite(line["final_loss"])
  text = benchmark.format_result(result)
  assert "images/s" in text and "of the measured matmul peak" in text
  assert 0 < line["fraction_of_peak_contemporaneous"] and line["matmul_peak_contemporaneous_flops_per_s"] > 0


def test_resnet_forward_macs_match_table1_at_224px():
  for depth, paper_gmacs in ((18, benchmark.PAPER_STUDENT_GMACS), (50, benchmark.PAPER_TEACHER_GMACS)):
    counts = benchmark.forward_flops(configuration.network_config(depth, 64, False, 4096, 256), 224)
    assert abs(counts["encoder_macs"] / 1e9 / paper_gmacs - 1) < 0.05, (depth, counts)
    # XLA skips the taps on zero padding, so its count sits a little lower (6% for ResNet-18).
    assert 0.9 < counts["encoder_flops"] / 2 / counts["encoder_macs"] <= 1.0, (depth, counts)
  # One predictor MLP 256 -> 4096 -> 256: six of them are the paper's "12M" of SimDis-On-7v.
  assert counts["predictor_macs"] == 2 * 256 * 4096


def test_step_flops_are_counted_on_the_cpu_where_the_device_gives_no_cost_analysis(monkeypatch):
  # The GPU backend returns no cost analysis for an unoptimised program (and its compiled
  # program hides convolutions in cuDNN calls): the count then comes from lowering one
  # device's share of the step for the CPU, and must equal the direct count.
  c = configuration.validate(tiny_config("simdis_on", "simdis_2v"))
  mesh = parallel.make_mesh(jax.devices()[:2])
  _, state, _ = benchmark.build_step(c, mesh)
  images, labels = benchmark.synthetic_batch(c, mesh)
  direct = benchmark.reference_step_flops(c, mesh, state, images, labels)
  real, calls = benchmark.flops_of, []

  def no_analysis_first(program):
    calls.append(program)
    return float("nan") if len(calls) == 1 else real(program)
  monkeypatch.setattr(benchmark, "flops_of", no_analysis_first)
  fallback = benchmark.reference_step_flops(c, mesh, state, images, labels)
  assert len(calls) == 2 and direct > 1e8
  assert abs(fallback / direct - 1) < 0.01, (fallback, direct)


def _run_steps(config, steps=3):
  mesh = parallel.make_mesh(jax.devices()[:2])
  _, state, train_step = benchmark.build_step(config, mesh, total_steps=10)
  images, labels = benchmark.synthetic_batch(config, mesh)
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
  assert c.model.compute_dtype == "auto" and configuration.compute_dtype(c) == jnp.float32
  c.model.compute_dtype = "bfloat16"
  assert configuration.compute_dtype(configuration.validate(c)) == jnp.bfloat16


def test_auto_conv_impl_on_cpu_is_matmul_for_wide_networks_only():
  c = tiny_config()  # widths 4 and 8: lax convolutions are faster there
  assert {configuration.conv_impl(c, n) for n in (c.model.student, c.model.teacher)} == {"xla"}
  wide = configuration.network_config(18, 64, False, 4096, 256)
  assert configuration.conv_impl(c, wide) == "matmul"
  c.model.conv_impl = "xla"
  assert configuration.conv_impl(configuration.validate(c), wide) == "xla"


def test_train_step_compiles_once_across_steps():
  state, _, train_step = _run_steps(tiny_config("byol", "byol"), steps=3)
  assert int(state.step) == 3
  assert train_step._cache_size() == 1  # pylint: disable=protected-access


def test_table1_training_rule_gives_the_papers_offline_and_multiview_ratios():
  p = benchmark.predicted_train_gflops(benchmark.PAPER_TEACHER_GMACS, benchmark.PAPER_STUDENT_GMACS,
                                       benchmark.PAPER_MULTIVIEW_GMACS / 6)
  assert p["SimDis-On"] == 16 * (4.1 + 1.8)
  assert abs(p["offline step"] / p["SimDis-On"] - (2 * 4.1 + 8 * 1.8) / (8 * 4.1 + 8 * 1.8)) < 1e-9
  assert 1.0 < p["SimDis-On-7v"] / p["SimDis-On"] < 1.01  # the extra views are nearly free
  # Offline = the BYOL teacher run (16 T) + the student step against the frozen teacher (4 T + 16 S).
  assert abs(p["SimDis-Off"] - (20 * 4.1 + 16 * 1.8)) < 1e-9


def test_compare_times_variants_alternately_and_reports_each():
  c = tiny_config("byol", "byol")
  result = benchmark.compare(c, ["", "model.conv_impl='matmul';resnet.MATMUL_CONV_VJP=False"], rounds=2,
                             warmup=1, devices=jax.devices()[:2], matmul_sizes=(128,))
  line = json.loads(json.dumps(result))
  assert [v["variant"] for v in line["variants"]] == ["(as given)", "model.conv_impl='matmul';resnet.MATMUL_CONV_VJP=False"]
  for v in line["variants"]:
    assert set(benchmark.COMPARE_FIELDS) <= set(v), set(benchmark.COMPARE_FIELDS) - set(v)
    assert v["steps_timed"] == 2 and v["flops_per_step"] > 0 and v["time_ratio_to_first"] > 0
  assert [v["conv_impl"] for v in line["variants"]] == ["xla", "matmul"]
  assert line["variants"][0]["time_ratio_to_first"] == 1.0
  from simdis_jax.models import resnet  # pylint: disable=import-outside-toplevel
  assert resnet.MATMUL_CONV_VJP is True  # restored after the variant was built
  assert "ratio" in benchmark.format_compare(result)


def test_overrides_parse_literals_and_reject_unknown_keys():
  assert benchmark.parse_overrides("model.conv_impl=xla; train.batch_size=64;resnet.MATMUL_CONV_VJP=False") == {
      "model.conv_impl": "xla", "train.batch_size": 64, "resnet.MATMUL_CONV_VJP": False}
  c = tiny_config()
  import pytest  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="Unknown config key"):
    benchmark._split_overrides(c, {"model.conv_implementation": "xla"})  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="no attribute"):
    benchmark._split_overrides(c, {"resnet.NO_SUCH_SWITCH": 1})  # pylint: disable=protected-access
