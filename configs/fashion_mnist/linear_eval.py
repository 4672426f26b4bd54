"""Linear evaluation on Fashion-MNIST of a finished pretraining run (e.g. the demo), CPU-sized.

    python -m simdis_jax.main --config configs/fashion_mnist/linear_eval.py --workdir workdirs/fmnist_linear \
        --config.pretrained.workdir=workdirs/demo

Optional argument `<protocol>,<mode>` (default `authors,fast`), e.g.
`--config configs/fashion_mnist/linear_eval.py:deepmind,full`.
protocol: authors (Linear -> BN, SGD momentum 0.9, LR 0.001 x batch/256) or
deepmind (plain Linear, Nesterov, LR 0.2 x batch/256); mode: fast (features of
the 60k/10k images extracted once, no augmentation) or full (random resized
crop + flip every step through the frozen encoder).
Other keys: --config.pretrained.network=teacher, --config.pretrained.weights=ema,
--config.data.train_examples=N / eval_examples=N for a quicker subset.

Epochs: fast mode keeps the protocols' 80 epochs, since training on cached
features costs seconds; one encoder pass over the 70k images dominates.
Full mode runs the encoder (and the crop) on every step, so on a CPU it
defaults to 10 epochs (--config.train.epochs=80 on an accelerator).
Batch 256 as the authors.

Wall time on 2 shared CPU cores, ResNet-10 (CIFAR stem), 60k/10k images:
fast mode ~15 s for width 8 (64-d features: ~10 s extraction, ~3 s for the
80 epochs) and ~45 s for width 16 (128-d: ~35 s extraction, ~5 s training);
full mode ~13 s (width 8) / ~30 s (width 16) per epoch plus one final
extraction pass, i.e. ~2.5 / ~5.5 minutes for the 10 epochs.
Data: 28x28 grey Fashion-MNIST, crop scale (0.2, 1) as in pretraining, eval
on the whole image (eval_crop_fraction 1.0). Writes <workdir>/linear_eval.json.
"""

from simdis_jax import configuration
from simdis_jax.evaluation import linear_config

FULL_MODE_CPU_EPOCHS = 10.0


def get_config(arg: str = "authors,fast"):
  """The config for '<protocol>,<mode>'."""
  protocol, _, mode = arg.partition(",")
  if protocol not in linear_config.PROTOCOLS or mode not in linear_config.MODES:
    raise ValueError(
      f"linear_eval.py takes '<protocol>,<mode>' with protocol in {sorted(linear_config.PROTOCOLS)} "
      f"and mode in {list(linear_config.MODES)}; got {arg!r}."
    )
  c = linear_config.apply_protocol(linear_config.base_config(), protocol)
  c.mode = mode
  c.pretrained.workdir = "workdirs/demo"
  c.train.batch_size = 256
  c.train.log_every_steps = 250
  c.train.checkpoint_every_steps = 2000
  if mode == "full":
    c.train.epochs = FULL_MODE_CPU_EPOCHS
  c.eval.batch_size = 1024
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = configuration.fashion_mnist_augment()
  return c
