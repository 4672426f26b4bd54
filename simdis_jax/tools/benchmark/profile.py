"""Where a step's device time goes: the XLA ops of a few traced calls (jax.profiler), by kind and by op."""

import collections
import glob
import tempfile
from typing import Any, Callable, Dict

import jax


def top_ops(run: Callable[[], Any], top: int = 15, calls: int = 2) -> Dict:
  """The XLA ops that take the most time in `calls` traced calls of `run` (jax.profiler), with their share."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(calls):
      jax.block_until_ready(run())
    jax.profiler.stop_trace()
    data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  by_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if line.name.startswith("python") or "PjRt" in line.name:
        continue  # host-side waits, not device work
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "$")):
          by_op[event.name] += event.duration_ns
  total = sum(by_op.values()) or 1
  by_kind = collections.Counter()
  for name, ns in by_op.items():
    by_kind[name.split(".")[0]] += ns  # "ynn_fusion.12" -> "ynn_fusion"
  return {
    "ops_total_s_per_call": total / 1e9 / calls,
    "top_kinds": [(name, ns / 1e9 / calls, ns / total) for name, ns in by_kind.most_common(top)],
    "top_ops": [(name, ns / 1e9 / calls, ns / total) for name, ns in by_op.most_common(top)],
  }
