"""Linear evaluation on ImageNet-1k, the paper's setting (authors' protocol, full mode).

    python -m simdis_jax.main --config configs/imagenet/linear_eval.py --workdir workdirs/imagenet_simdis_off_linear \
        --config.pretrained.workdir=workdirs/imagenet_simdis_off

Authors' protocol: frozen encoder in eval mode, Linear -> BatchNorm1d, SGD
momentum 0.9, no weight decay, LR 0.001 x batch/256, batch 256 (the authors'
`-b 256` on 8 GPUs), 80 epochs, cosine; training views are random resized
crops (area 0.08-1, aspect 3/4-4/3) to 224 px + horizontal flip; evaluation
resizes to 256 and centre-crops 224 (eval_crop_fraction = 224/256 = 0.875).
The online student is evaluated by default (--config.pretrained.network=teacher
and/or --config.pretrained.weights=ema for the others). Optional argument
`<protocol>,<mode>` as in configs/fashion_mnist/linear_eval.py
(e.g. `:deepmind,full` for DeepMind BYOL's protocol).

ImageNet is read with the streaming tfds pipeline (README, "Input"): training
crops are decoded and cropped on the host, flipped on the device.
"""

from simdis_jax.data import augment
from simdis_jax.evaluation import linear_config


def get_config(arg: str = "authors,full"):
  """The config for '<protocol>,<mode>'."""
  protocol, _, mode = arg.partition(",")
  if protocol not in linear_config.PROTOCOLS or mode not in linear_config.MODES:
    raise ValueError(
      f"linear_eval.py takes '<protocol>,<mode>' with protocol in {sorted(linear_config.PROTOCOLS)} "
      f"and mode in {list(linear_config.MODES)}; got {arg!r}."
    )
  c = linear_config.apply_protocol(linear_config.base_config(), protocol)
  c.mode = mode
  c.train.batch_size = 256
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 5000
  c.eval.batch_size = 512
  c.data.name = "imagenet2012"
  c.data.image_size = 224
  c.data.augment = augment.default_config(3)
  c.data.augment.crop_scale = (0.08, 1.0)
  c.data.augment.eval_crop_fraction = 224 / 256
  return c
