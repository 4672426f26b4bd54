"""Depthwise convolution forward + backward: XLA's grouped convolution, models/depthwise.py, PyTorch's (oneDNN).

    python -m simdis_jax.tools.benchmark.depthwise                 # the (256, 14, 14, 96) 3x3 shape
    python -m simdis_jax.tools.benchmark.depthwise --sweep         # + MobileNetV3 / EfficientNet-B0 shapes

Every variant is timed in each round, the order alternating round by round, in one process (the box is
shared: compare within one run only). PyTorch runs NCHW (its default, as a plain nn.Conv2d takes it) and
channels_last. Prints one line per shape (median ms) and one JSON line.
"""

import argparse
import json
import time
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from simdis_jax.models import depthwise

# (batch, size, channels, kernel, stride), where the networks use them: the SimDis-Off step at 28 px
# (two views of 128: batch 256, the small-image variants) and the 224 px step at batch 32.
ISSUE_SHAPE = (256, 14, 96, 3, 1)
SWEEP = (
  # MobileNetV3-Small, 28 px
  (256, 28, 16, 3, 1),
  (256, 28, 72, 3, 2),
  (256, 14, 88, 3, 1),
  (256, 14, 96, 5, 2),
  (256, 7, 240, 5, 1),
  (256, 7, 288, 5, 2),
  (256, 4, 576, 5, 1),
  # EfficientNet-B0, 28 px
  (256, 28, 32, 3, 1),
  (256, 28, 144, 5, 2),
  (256, 14, 240, 3, 2),
  (256, 7, 480, 3, 1),
  (256, 7, 672, 5, 1),
  (256, 4, 1152, 5, 1),
  (256, 4, 1152, 3, 1),
  # MobileNetV3-Large / EfficientNet-B0, 224 px, batch 32
  (32, 112, 16, 3, 1),
  (32, 112, 96, 3, 2),
  (32, 56, 72, 5, 2),
  (32, 28, 240, 3, 2),
  (32, 14, 672, 5, 2),
  (32, 7, 960, 5, 1),
  (32, 7, 1152, 3, 1),
)


def _jax_step(conv, stride: int, pad: int):
  def loss(x, kernel, cotangent):
    return jnp.sum(conv(x, kernel, stride, pad) * cotangent)

  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _xla_conv(x, kernel, stride, pad):
  return lax.conv_general_dilated(
    x,
    kernel,
    (stride, stride),
    ((pad, pad), (pad, pad)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=x.shape[-1],
  )


def variants(shape: Tuple[int, ...]) -> Dict[str, callable]:
  """name -> a function running one forward + backward of `shape` (inputs made once, outside the timing)."""
  import torch  # pylint: disable=import-outside-toplevel

  n, size, c, k, stride = shape
  pad = (k - 1) // 2
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, size, size, c), np.float32)
  kernel = rng.standard_normal((k, k, 1, c), np.float32)
  out = (size + 2 * pad - k) // stride + 1
  cotangent = rng.standard_normal((n, out, out, c), np.float32)
  jx, jk, jc = jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(cotangent)
  xla, ours = _jax_step(_xla_conv, stride, pad), _jax_step(depthwise.depthwise_conv, stride, pad)
  tk = torch.tensor(kernel).permute(3, 2, 0, 1).contiguous().requires_grad_()
  tx = torch.tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
  tc = torch.tensor(cotangent).permute(0, 3, 1, 2).contiguous()
  lx = tx.detach().to(memory_format=torch.channels_last).requires_grad_()
  lc = tc.to(memory_format=torch.channels_last)

  def torch_step(inputs, cot):
    y = torch.nn.functional.conv2d(inputs, tk, stride=stride, padding=pad, groups=c)
    return torch.autograd.grad(y, (inputs, tk), cot)

  return {
    "xla": lambda: jax.block_until_ready(xla(jx, jk, jc)),
    "shifted": lambda: jax.block_until_ready(ours(jx, jk, jc)),
    "torch": lambda: torch_step(tx, tc),
    "torch_cl": lambda: torch_step(lx, lc),
  }


def time_shape(shape: Tuple[int, ...], rounds: int) -> Dict[str, float]:
  """Median seconds of each variant on `shape`, alternated over `rounds` rounds after one warm-up call each."""
  fns = variants(shape)
  for f in fns.values():
    f()
  times: Dict[str, List[float]] = {name: [] for name in fns}
  order = list(fns)
  for r in range(rounds):
    for name in order if r % 2 == 0 else order[::-1]:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
  """Times the issue's shape (and the sweep when asked) and prints the medians."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep", action="store_true", help="also the MobileNetV3 / EfficientNet-B0 shapes")
  parser.add_argument("--rounds", type=int, default=9, help="rounds for the issue's shape (the sweep: a third)")
  args = parser.parse_args()
  shapes = [(ISSUE_SHAPE, args.rounds)] + ([(s, max(3, args.rounds // 3)) for s in SWEEP] if args.sweep else [])
  print(
    "depthwise convolution, forward + backward, float32, median ms (N, size, C, k, stride); "
    "shifted/torch < 1 = ours faster"
  )
  print(f"{'shape':<26} {'xla':>9} {'shifted':>9} {'torch':>9} {'torch_cl':>9} {'shifted/torch':>14}")
  rows = []
  for shape, rounds in shapes:
    t = time_shape(shape, rounds)
    rows.append({"shape": shape, **t})
    print(
      f"{str(shape):<26} {t['xla'] * 1e3:9.1f} {t['shifted'] * 1e3:9.1f} {t['torch'] * 1e3:9.1f} "
      f"{t['torch_cl'] * 1e3:9.1f} {t['shifted'] / t['torch']:14.2f}",
      flush=True,
    )
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
