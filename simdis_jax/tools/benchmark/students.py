"""A student encoder's training step in JAX beside the same network's in PyTorch, alternated in one process.

    python -m simdis_jax.tools.benchmark.students --arch mobilenet_v3_small --image_size 28 --batch 256
    python -m simdis_jax.tools.benchmark.students --arch efficientnet_b0 --image_size 224 --batch 32 --rounds 3

One step = the encoder's forward on the batch in training mode (BatchNorm batch statistics and running
averages), the gradient of mean(feature²) and an SGD update, in float32: the student's share of a
SimDis-Off step without heads, augmentation or teacher. JAX runs models/encoders.py with the config's
speed switches (`--depthwise_impl`, `--conv_impl`), PyTorch the plain-torch model of
tools/benchmark/torch_students.py, NCHW (its default) and channels_last. The fraction of matmul peak
counts 3 x 2 x the forward's multiply-adds (every kernel tap, as Table 1 counts them) over the step time
and a float32 1024² matmul timed in the same rounds. Prints a table and one JSON line.
"""

import argparse
import json
import time
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from simdis_jax.models import depthwise, encoders
from simdis_jax.flops import count_macs


def jax_step(arch: str, image_size: int, batch: int, channels: int, conv_impl: str, depthwise_impl: str):
  """(a ready-to-call jitted training step of the JAX encoder on a fixed batch, forward MACs per image)."""
  small = image_size < 64
  options = encoders.EncoderOptions(cifar_stem=small, patch_size=4 if small else 16)
  net = encoders.encoder(arch, options, conv_impl=conv_impl, depthwise_impl=depthwise.resolve(depthwise_impl))
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, image_size, image_size, channels))
  variables = net.init(jax.random.PRNGKey(1), x[:1], train=False)
  macs = count_macs(lambda v, im: net.apply(v, im, train=False), variables, x[:1])

  def loss(params, stats, images):
    feature, updates = net.apply({"params": params, "batch_stats": stats}, images, train=True, mutable=["batch_stats"])
    return jnp.mean(feature**2), updates.get("batch_stats", stats)

  @jax.jit
  def step(params, stats, images):
    (_, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, images)
    return jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, params, grads), stats

  state = [variables["params"], variables.get("batch_stats", {})]

  def run():
    state[0], state[1] = jax.block_until_ready(step(state[0], state[1], x))

  return run, macs


def torch_step(arch: str, image_size: int, batch: int, channels: int, channels_last: bool):
  """A ready-to-call training step of the plain-torch model on a fixed batch."""
  import torch  # pylint: disable=import-outside-toplevel
  from simdis_jax.tools.benchmark import torch_students  # pylint: disable=import-outside-toplevel

  model = torch_students.build(arch, image_size, channels).train()
  x = torch.randn(batch, channels, image_size, image_size)
  if channels_last:
    model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01)

  def run():
    opt.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    opt.step()

  return run


def matmul_run():
  """A jitted float32 1024x1024 matmul (the peak's yardstick) and its FLOPs."""
  a = jax.random.normal(jax.random.PRNGKey(2), (1024, 1024))
  mm = jax.jit(jnp.matmul)
  return (lambda: jax.block_until_ready(mm(a, a))), 2.0 * 1024**3


def measure(args) -> Dict:
  """Median seconds of every variant over alternating rounds, the peak, and the derived figures."""
  fns = {"jax": None, "torch": None, "torch_cl": None}
  fns["jax"], macs = jax_step(
    args.arch, args.image_size, args.batch, args.channels, args.conv_impl, args.depthwise_impl
  )
  fns["torch"] = torch_step(args.arch, args.image_size, args.batch, args.channels, False)
  if args.image_size >= 64 or not args.arch.startswith("vit"):
    fns["torch_cl"] = torch_step(args.arch, args.image_size, args.batch, args.channels, True)
  fns = {k: f for k, f in fns.items() if f is not None}
  mm, mm_flops = matmul_run()
  for f in list(fns.values()) * 2 + [mm]:
    f()
  times: Dict[str, List[float]] = {k: [] for k in fns}
  peaks = []
  for r in range(args.rounds):
    for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
    peaks.append(mm_flops / min(_timed(mm) for _ in range(3)))
  step_flops = 3 * 2 * macs * args.batch
  peak = float(np.median(peaks))
  out = {
    "arch": args.arch,
    "image_size": args.image_size,
    "batch": args.batch,
    "macs_per_image": macs,
    "train_flops_per_step": step_flops,
    "matmul_peak_flops_per_s": peak,
    "depthwise_impl": depthwise.resolve(args.depthwise_impl),
    "conv_impl": args.conv_impl,
  }
  for name, t in times.items():
    s = float(np.median(t))
    out[name] = {"step_s": s, "images_per_s": args.batch / s, "fraction_of_peak": step_flops / s / peak}
  return out


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  """Parses the flags, measures, prints the table and the JSON line."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="mobilenet_v3_small", choices=[a for a in encoders.ARCHS if a != "resnet"])
  parser.add_argument("--image_size", type=int, default=28)
  parser.add_argument("--batch", type=int, default=256, help="images per step (the SimDis-Off student: 2 x 128)")
  parser.add_argument("--channels", type=int, default=0, help="0 = 1 below 64 px (Fashion-MNIST), else 3")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--conv_impl",
    default="xla",
    choices=("xla", "matmul"),
    help="dense convolutions (the students' config resolves auto to xla)",
  )
  parser.add_argument("--depthwise_impl", default="auto", choices=depthwise.IMPLS)
  args = parser.parse_args()
  args.channels = args.channels or (1 if args.image_size < 64 else 3)
  r = measure(args)
  print(
    f"{args.arch}, {args.image_size} px, batch {args.batch}, {args.channels} channel(s): encoder training step, "
    f"float32, median of {args.rounds} alternated rounds; {r['macs_per_image'] / 1e6:.1f} M MACs per image; "
    f"matmul peak {r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s"
  )
  for name in ("jax", "torch", "torch_cl"):
    if name in r:
      v = r[name]
      print(
        f"  {name:<9} {v['step_s'] * 1e3:9.1f} ms {v['images_per_s']:9.1f} images/s "
        f"{100 * v['fraction_of_peak']:6.2f}% of peak"
      )
  print(json.dumps(r))


if __name__ == "__main__":
  main()
