"""Export one trained network for serving: TF SavedModel, TFLite flatbuffer (both via jax2tf), or .npz + JSON.

    python -m simdis_jax.export --workdir <run> --network student --format saved_model|tflite|npz --out <path> [--check]

The SavedModel and TFLite models take uint8 images [batch, H, W, C] (any batch
size) and return float32 features [batch, D]: the evaluation preprocessing
(centre crop, resize, normalise) is inside them, exactly as `Encoder.embed`
computes it. H × W is the size the images arrive at (--input_size; default the
dataset's own size: 28 for Fashion-MNIST, image_size / eval_crop_fraction otherwise).
"""

import contextlib
import json
import os
import shutil
import sys
import time
from typing import Iterator, Optional, Tuple

import jax
import numpy as np

from simdis_jax import api, checkpoint
from simdis_jax.data import datasets

FORMATS = ("saved_model", "tflite", "npz")
SIGNATURE = "serving_default"


def default_input_size(config) -> int:
  """Side of the images the exported model takes by default: the dataset's own image size."""
  own = datasets.get(config.data.name).image_size  # an in-memory dataset's images (data/datasets.py)
  if own:
    return own
  return int(round(config.data.image_size / float(config.data.augment.eval_crop_fraction)))


def tf_module(encoder: api.Encoder, input_hw: Tuple[int, int]):
  """A tf.Module whose `serve(images uint8 [None, H, W, C]) -> {'features'}` runs the encoder (weights as
  tf.Variables)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from jax.experimental import jax2tf  # pylint: disable=import-outside-toplevel

  height, width = input_hw
  channels = encoder.channels
  # The batch dimension is symbolic: one traced program serves every batch size.
  fn = jax2tf.convert(
    encoder.features_fn(), polymorphic_shapes=[None, f"(b, {height}, {width}, {channels})"], with_gradient=False
  )
  module = tf.Module()
  used = encoder.variables
  if not encoder.project:  # features need the encoder only: the projector's weights stay out of the model
    used = {k: {"encoder": v["encoder"]} for k, v in used.items()}
  module.variables_tree = tf.nest.map_structure(
    lambda x: tf.Variable(np.asarray(x), trainable=False), jax.device_get(used)
  )

  spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")

  @tf.function(input_signature=[spec], autograph=False)
  def serve(images):  # static shape: what TFLite converts
    return {"features": fn(module.variables_tree, images)}

  expected = f"images must be uint8 [batch, {height}, {width}, {channels}]"

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")], autograph=False)
  def serve_checked(images):
    # A SavedModel signature checks only the dtype; a wrong rank or size would reach the converted
    # program and fail there with pages of MLIR. Checked here first, in one message.
    shape = tf.shape(images)
    ok = tf.logical_and(
      tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(tf.pad(shape, [[0, 4]])[1:4], [height, width, channels]))
    )
    check = tf.debugging.Assert(ok, [f"{expected}; got shape", shape], summarize=8)
    with tf.control_dependencies([check]):
      images = tf.ensure_shape(tf.identity(images), [None, height, width, channels])
    return {"features": fn(module.variables_tree, images)}

  module.serve, module.serve_checked = serve, serve_checked
  return module


def export_saved_model(encoder: api.Encoder, out: str, input_hw: Tuple[int, int]) -> str:
  """Writes a SavedModel with the 'serving_default' signature images -> features."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  module = tf_module(encoder, input_hw)
  tf.saved_model.save(module, out, signatures={SIGNATURE: module.serve_checked.get_concrete_function()})
  return out


def export_tflite(encoder: api.Encoder, out: str, input_hw: Tuple[int, int]) -> str:
  """Writes a float32 TFLite flatbuffer (input uint8 [1, H, W, C], resizable batch) -> features."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  module = tf_module(encoder, input_hw)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
  with open(out, "wb") as f:
    f.write(converter.convert())
  return out


def architecture(encoder: api.Encoder, input_hw: Tuple[int, int]) -> dict:
  """The JSON description of an .npz export: network, preprocessing, layouts and BN conventions."""
  config = encoder.config
  aug = config.data.augment
  return {
    "format": "simdis_jax.npz/1",
    "network": encoder.network,
    "weights": encoder.weights,
    "step": encoder.step,
    "model": api.model_section(config, encoder.network).to_dict(),
    "arch": "resnet_v1.5" + ("_cifar_stem" if api.model_section(config, encoder.network).cifar_stem else ""),
    "bn_running_var": config.model.get("bn_running_var", "biased"),
    "bn_epsilon": 1e-5,
    "layouts": {"conv kernel": "HWIO", "dense kernel": "[in, out]"},
    "input": {"shape": [None, input_hw[0], input_hw[1], encoder.channels], "dtype": "uint8"},
    "preprocessing": {
      "scale": "x / 255",
      "eval_crop_fraction": float(aug.eval_crop_fraction),
      "resize": "bilinear",
      "image_size": encoder.image_size,
      "mean": list(aug.mean),
      "std": list(aug.std),
    },
    "feature_dim": encoder.feature_dim,
    "keys": "'<collection>/<module path>/<name>', collection params or batch_stats",
  }


def export_npz(encoder: api.Encoder, out: str, input_hw: Tuple[int, int]) -> str:
  """Writes every weight and BN statistic to <out> (.npz) and the architecture to <out>.json beside it."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(encoder.variables)):
    flat["/".join(p.key for p in path)] = np.asarray(leaf)
  with open(out, "wb") as f:  # a file object: np.savez would append ".npz" to a temporary name
    np.savez(f, **flat)
  return out


def json_path(npz_path: str) -> str:
  """Where an .npz export's architecture description goes."""
  return (npz_path[:-4] if npz_path.endswith(".npz") else npz_path) + ".json"


def run_saved_model(path: str, images: np.ndarray) -> np.ndarray:
  """Features of a SavedModel export through its serving signature."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  serve = tf.saved_model.load(path).signatures[SIGNATURE]
  return serve(images=tf.constant(images))["features"].numpy()


def tflite_interpreter(path: str, batch: int):
  """A TFLite interpreter of an export, its input resized to `batch` images."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  interpreter = tf.lite.Interpreter(model_path=path)
  index = interpreter.get_input_details()[0]["index"]
  shape = list(interpreter.get_input_details()[0]["shape"])
  interpreter.resize_tensor_input(index, [batch] + shape[1:])
  interpreter.allocate_tensors()
  return interpreter


def run_tflite(path: str, images: np.ndarray) -> np.ndarray:
  """Features of a TFLite export for a batch of images."""
  interpreter = tflite_interpreter(path, images.shape[0])
  interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def run_npz(path: str, images: np.ndarray, encoder: api.Encoder) -> np.ndarray:
  """Features from the .npz weights put back into the network (checks that the file holds every weight)."""
  with np.load(path) as data:
    flat = dict(data)
  variables = {}
  for key, value in flat.items():
    node = variables
    *parents, name = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[name] = value
  return np.asarray(jax.jit(encoder.features_fn())(variables, images))


def tflite_latency(path: str, images: np.ndarray, repeats: int = 200) -> float:
  """Median seconds per image of single-image TFLite inference on this CPU."""
  interpreter = tflite_interpreter(path, 1)
  index = interpreter.get_input_details()[0]["index"]
  times = []
  for i in range(repeats):
    interpreter.set_tensor(index, images[i % len(images)][None])
    t0 = time.perf_counter()
    interpreter.invoke()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def check_images(config, input_hw: Tuple[int, int], count: int = 100) -> Tuple[np.ndarray, str]:
  """Real test images at the export's input size (an in-memory dataset's test set), or where unavailable a clear
  error."""
  dataset = datasets.get(config.data.name)
  if dataset.loader is None or tuple(input_hw) != (dataset.image_size,) * 2:
    known = ", ".join(f"{d.title}'s {d.image_size}×{d.image_size}" for d in datasets.DATASETS.values())
    raise ValueError(
      f"--check compares on the test images of an in-memory dataset ({known}); this export "
      f"takes {input_hw} images of a {config.data.name!r} run. Check it with your own images "
      "through run_saved_model / run_tflite instead."
    )
  return dataset.loader.load(config.data.data_dir)["test_images"][:count], f"{dataset.title} test"


def check_writable(out: str) -> None:
  """Before any conversion: `out` can be written, or one line naming the fix.

  Its folder need not exist yet (export creates it once the weights are loaded): the nearest existing
  folder above it must take a file.
  """
  folder = os.path.dirname(os.path.abspath(out))
  while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
  probe = os.path.join(folder, f".{os.path.basename(out)}.probe{os.getpid()}")
  try:
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"--out {out} cannot be written ({e.strerror or e}): choose a writable place for it.") from None


@contextlib.contextmanager
def _written_whole(out: str) -> Iterator[str]:
  """A temporary path to write the export to, moved onto `out` only when complete (a full disk loses nothing)."""
  tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.partial{os.getpid()}")
  try:
    yield tmp
    if os.path.isdir(out) and not os.path.islink(out):
      shutil.rmtree(out)  # an earlier SavedModel folder: os.replace cannot replace a non-empty one
    os.replace(tmp, out)
  except OSError as e:
    raise OSError(
      f"Writing {out} failed ({e.strerror or e}); nothing was replaced: free space or choose another --out."
    ) from None
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
      os.remove(tmp)


def export(
  workdir: str,
  network: str,
  fmt: str,
  out: str,
  weights: str = "online",
  step: Optional[int] = None,
  input_size: int = 0,
  project: bool = False,
) -> Tuple[api.Encoder, Tuple[int, int]]:
  """Exports one network of a run in `fmt`; returns the encoder and the input size it was traced at.

  The weights come through the verified restore (a damaged newest step is passed over with one
  warning line; a chosen damaged or missing step is an error); the output is written whole or not at all.
  """
  if fmt not in FORMATS:
    raise ValueError(f"--format={fmt!r}: choose one of {list(FORMATS)}.")
  check_writable(out)
  encoder = api.load_encoder(workdir, network=network, weights=weights, step=step, project=project)
  side = input_size or default_input_size(encoder.config)
  input_hw = (side, side)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # --out's folder, as check_writable allowed
  writer = {"saved_model": export_saved_model, "tflite": export_tflite, "npz": export_npz}[fmt]
  with _written_whole(out) as tmp:
    writer(encoder, tmp, input_hw)
  if fmt == "npz":
    with _written_whole(json_path(out)) as tmp, open(tmp, "w") as f:
      json.dump(architecture(encoder, input_hw), f, indent=2)
  return encoder, input_hw


def define_flags(fv) -> None:
  """The export's flags, on the FlagValues `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "A simdis_jax run (trained or imported).", flag_values=fv, required=True)
  flags.DEFINE_enum("network", "student", list(api.NETWORKS), "Which network.", flag_values=fv)
  flags.DEFINE_enum("weights", "online", list(api.WEIGHTS), "Its online weights or their EMA.", flag_values=fv)
  flags.DEFINE_enum("format", None, list(FORMATS), "What to write.", flag_values=fv, required=True)
  flags.DEFINE_string("out", None, "SavedModel directory, .tflite file or .npz file.", flag_values=fv, required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
  flags.DEFINE_integer("input_size", 0, "Side of the input images (default: the dataset's).", flag_values=fv)
  flags.DEFINE_bool("project", False, "Export the projector output instead of the features.", flag_values=fv)
  flags.DEFINE_bool("check", False, "Compare with JAX on 100 real test images.", flag_values=fv)


USAGE = """Export one network of a run as a SavedModel, TFLite or .npz (console script simdis-export).

    simdis-export --workdir workdirs/demo --format saved_model --out exported/demo_student [--check]
    python -m simdis_jax.export ...      (the same command)

docs/export.md describes the formats, their input contract and --check.
"""


def main(argv=None) -> int:
  """Command line: export, then optionally --check the export against JAX on real test images."""
  from simdis_jax import cli  # pylint: disable=import-outside-toplevel

  args = cli.parse(define_flags, argv, USAGE)
  try:
    return _main(args)
  except (ValueError, TypeError, OSError, checkpoint.NoIntactCheckpoint) as e:  # bad input: one line, no traceback
    print(f"export: {e}", file=sys.stderr)
    return 2


def _main(args) -> int:
  """Export, print what was written, and --check it."""
  encoder, input_hw = export(
    args.workdir, args.network, args.format, args.out, args.weights, args.step, args.input_size, args.project
  )
  size = (
    sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    if os.path.isdir(args.out)
    else os.path.getsize(args.out)
  )
  print(
    f"Wrote {args.format} of the {args.weights} {args.network} (step {encoder.step}) to {args.out} "
    f"({size / 1024:.1f} KiB); input uint8 [batch, {input_hw[0]}, {input_hw[1]}, {encoder.channels}]."
  )
  if args.check:
    images, what = check_images(encoder.config, input_hw)
    want = encoder.embed(images)
    got = {
      "saved_model": lambda: run_saved_model(args.out, images),
      "tflite": lambda: run_tflite(args.out, images),
      "npz": lambda: run_npz(args.out, images, encoder),
    }[args.format]()
    print(
      f"check: {len(images)} {what} images, max |{args.format} - JAX| = {np.max(np.abs(got - want)):.3g} "
      f"(features up to {np.max(np.abs(want)):.3g})"
    )
    if args.format == "tflite":
      print(
        f"TFLite CPU latency: {1e3 * tflite_latency(args.out, images):.3f} ms per image (batch 1, median "
        "of 200, this machine)"
      )
  return 0


def run() -> None:
  """Console script simdis-export."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
