"""The paper's Table 1 (per-image training cost of SimDis-Off, -On and -On-7v) from measured FLOPs and MACs.

python -m simdis_jax.benchmark --table1 [--table1_image_size 224]
"""

import os
from typing import Dict

import jax
import ml_collections

from simdis_jax import config_files, parallel
from simdis_jax.flops import forward_flops
from simdis_jax.tools.benchmark.timing import build_step, reference_step_flops, synthetic_batch

# The paper's Table 1: forward multiply-adds per 224-px image, and its cost formulas (× M × N).
PAPER_TEACHER_GMACS = 4.1
PAPER_STUDENT_GMACS = 1.8
PAPER_MULTIVIEW_GMACS = 0.012
PAPER_TABLE1 = {  # method: (target views, G forward MACs per image per epoch, formula)
  "SimDis-Off": (2, 2 * PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(8.2G + 1.8G) x M x N"),
  "SimDis-On": (2, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS, "(4.1G + 1.8G) x M x N"),
  "SimDis-On-7v": (7, PAPER_TEACHER_GMACS + PAPER_STUDENT_GMACS + PAPER_MULTIVIEW_GMACS, "(4.1G + 1.8G + 12M) x M x N"),
}


def predicted_train_gflops(teacher_gmacs: float, student_gmacs: float, predictor_gmacs: float) -> Dict[str, float]:
  """Table 1's forward costs turned into training FLOPs per image: backward = 2x forward, 2 views, 2 FLOPs/MAC.

  A trained network costs 3 forwards per view, a target (EMA or frozen) network 1.
  """
  t, s = teacher_gmacs, student_gmacs
  byol_teacher = 2 * 2 * (3 * t + t)
  online = 2 * 2 * (3 * t + t + 3 * s + s)
  offline_step = 2 * 2 * (t + 3 * s + s)  # frozen teacher EMA forward + the student's BYOL pair
  return {
    "SimDis-Off": byol_teacher + offline_step,
    "SimDis-On": online,
    "SimDis-On-7v": online + 2 * 2 * 3 * 6 * predictor_gmacs,
    "offline step": offline_step,
  }


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BENCHMARK_CONFIG = os.path.join(_ROOT, "configs", "benchmark", "r50_r18.py")


def table1_configs(image_size: int = 224, batch_size: int = 2) -> Dict[str, ml_collections.ConfigDict]:
  """The training runs behind Table 1's rows (standard setting), at `image_size` and a small batch."""
  module = config_files.load_module(BENCHMARK_CONFIG)
  return {name: module.get_config(f"{name},{batch_size},{image_size}") for name in ("byol_r50", "off", "on", "on_7v")}


def step_flops_per_image(config, mesh) -> float:
  """XLA's FLOPs per source image of one train step of `config` with lax convolutions (lowered, not compiled)."""
  _, state, train_step = build_step(config, mesh)
  images, labels = synthetic_batch(config, mesh)
  return reference_step_flops(config, mesh, state, images, labels, train_step) / config.train.batch_size


def table1(image_size: int = 224, batch_size: int = 2) -> Dict:
  """Per-image training cost of SimDis-Off, SimDis-On and SimDis-On-7v: measured FLOPs beside the paper's formula."""
  mesh = parallel.make_mesh(jax.devices()[:1])
  configs = table1_configs(image_size, batch_size)
  step = {name: step_flops_per_image(c, mesh) for name, c in configs.items()}
  teacher = forward_flops(configs["on"].model.teacher, image_size)
  student = forward_flops(configs["on"].model.student, image_size)
  t, s = teacher["encoder_macs"] / 1e9, student["encoder_macs"] / 1e9
  heads_7v = 6 * student["predictor_macs"] / 1e9  # six extra predictors on one view: the paper's "12M"
  rows = {
    # Offline trains the teacher (BYOL) first, then the student against the frozen teacher.
    "SimDis-Off": {
      "measured_train_gflops": (step["byol_r50"] + step["off"]) / 1e9,
      "formula_measured_gmacs": 2 * t + s,
    },
    "SimDis-On": {"measured_train_gflops": step["on"] / 1e9, "formula_measured_gmacs": t + s},
    "SimDis-On-7v": {"measured_train_gflops": step["on_7v"] / 1e9, "formula_measured_gmacs": t + s + heads_7v},
  }
  predicted = predicted_train_gflops(PAPER_TEACHER_GMACS, PAPER_STUDENT_GMACS, PAPER_MULTIVIEW_GMACS / 6)
  for name, row in rows.items():
    views, paper, formula = PAPER_TABLE1[name]
    row.update(
      views=views,
      paper_formula=formula,
      paper_gmacs=paper,
      paper_ratio_to_on=paper / PAPER_TABLE1["SimDis-On"][1],
      predicted_train_gflops=predicted[name],
      measured_ratio_to_on=row["measured_train_gflops"] / (step["on"] / 1e9),
    )
  return {
    "image_size": image_size,
    "teacher_forward_gmacs": t,
    "student_forward_gmacs": s,
    "extra_7v_head_gmacs": heads_7v,
    "step_gflops_per_image": {k: v / 1e9 for k, v in step.items()},
    "predicted_offline_step_gflops": predicted["offline step"],
    "predicted_offline_to_online_step": predicted["offline step"] / predicted["SimDis-On"],
    "measured_offline_to_online_step": step["off"] / step["on"],
    "rows": rows,
  }


def format_table1(t: Dict) -> str:
  """Table 1 as text: the paper's formula, the same formula with measured forward MACs, measured training FLOPs."""
  lines = [
    f"Table 1 per training image and epoch at {t['image_size']} px (M x N = images x epochs).",
    "Measured forward MACs (every kernel tap, as the paper counts): "
    f"teacher R50 {t['teacher_forward_gmacs']:.2f} G "
    f"(paper 4.1 G), student R18 {t['student_forward_gmacs']:.2f} G (paper 1.8 G), six extra "
    f"7v predictors on one view {t['extra_7v_head_gmacs'] * 1e3:.0f} M (paper 12 M).",
    "",
    f"{'method':<13} {'views':>5}  {'paper formula':<28} {'paper G':>8} {'ours G':>8} "
    f"{'paper /On':>9} {'predicted':>10} {'measured':>9} {'measured /On':>12}",
  ]
  for name, r in t["rows"].items():
    lines.append(
      f"{name:<13} {r['views']:>5}  {r['paper_formula']:<28} {r['paper_gmacs']:>8.2f} "
      f"{r['formula_measured_gmacs']:>8.2f} {r['paper_ratio_to_on']:>9.2f} "
      f"{r['predicted_train_gflops']:>10.1f} {r['measured_train_gflops']:>9.1f} "
      f"{r['measured_ratio_to_on']:>12.2f}"
    )
  lines += [
    "",
    "paper G / ours G: the paper's forward-MAC formula (G MACs per image per epoch), with its",
    "  constants and with our measured ones. It counts forward passes only.",
    "predicted / measured: training GFLOPs per image. predicted = Table 1's constants with",
    "  backward = 2x forward (trained nets 3 forwards per view, EMA/frozen targets 1), 2 views;",
    "  measured = XLA's count of the whole train steps (lax convolutions: no padding taps, so",
    "  ~4% under the prediction). SimDis-Off = its BYOL teacher run "
    f"({t['step_gflops_per_image']['byol_r50']:.1f}) + its student step "
    f"({t['step_gflops_per_image']['off']:.1f}).",
    f"Offline step / online step: predicted {t['predicted_offline_to_online_step']:.3f}, "
    f"measured {t['measured_offline_to_online_step']:.3f}.",
  ]
  return "\n".join(lines)
