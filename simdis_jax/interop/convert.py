"""Name and layout mappings from published checkpoints to this project's Network variables.

Target: {'params': {...}, 'batch_stats': {...}} of models/network.py's Network — encoder
(stem_conv, stem_bn, stage{i}_block{j}/Conv_k, BatchNorm_k, proj_conv, proj_bn), projector
and predictor_<head> (dense1, bn, dense2). Layouts: PyTorch conv OIHW -> HWIO, Linear
[out, in] -> kernel [in, out]; Haiku conv HWIO and Linear [in, out] already match; BN
weight/bias -> scale/bias, running mean/var -> mean/var unchanged (both frameworks' eval
mode divides by sqrt(running_var + eps) as stored; see models/batch_norm.py).
"""

import dataclasses
import re
from typing import Dict, List, Optional

import numpy as np

from simdis_jax.models.resnet import STAGE_SIZES


@dataclasses.dataclass
class Imported:
  """One network read from a checkpoint: its architecture and variables (online, and EMA if the file has it)."""

  arch: dict  # depth, width, cifar_stem, hidden_dim, proj_dim (0 = no projector in the file)
  in_channels: int
  online: dict  # {'params': tree, 'batch_stats': tree}, possibly without projector / predictor
  ema: Optional[dict] = None
  bn_running_var: str = "biased"  # the convention the source framework trained with
  notes: List[str] = dataclasses.field(default_factory=list)


def put(tree: dict, path: str, value) -> None:
  """Sets tree[a][b][c] = value for path 'a/b/c', creating the dicts on the way."""
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  if leaf in tree:
    raise ValueError(f"two checkpoint entries map to {path}")
  tree[leaf] = np.asarray(value, np.float32)


def depth_of(stage_sizes, bottleneck: bool) -> int:
  """The ResNet depth of a block layout (basic blocks below 50), or a clear error."""
  for depth, sizes in STAGE_SIZES.items():
    if tuple(sizes) == tuple(stage_sizes) and (depth >= 50) == bottleneck:
      return depth
  raise ValueError(
    f"The checkpoint's ResNet has {tuple(stage_sizes)} {'bottleneck' if bottleneck else 'basic'} "
    f"blocks per stage: not one of this project's depths {sorted(STAGE_SIZES)}."
  )


# ------------------------------------------------------------------ PyTorch


def tensor(sd, name: str, ndim: int, what: str, channels: Optional[int] = None) -> np.ndarray:
  """sd[name] checked: present, of rank `ndim` (and `channels` long on axis 0), a real number array; else one line."""
  if name not in sd:
    raise ValueError(f"The checkpoint lacks {name!r} ({what}); is it a complete ResNet of this format?")
  value = np.asarray(sd[name])
  if (
    value.ndim != ndim
    or (channels is not None and value.shape[0] != channels)
    or not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer))
  ):
    want = f"{ndim}-D" + (f" with {channels} channels" if channels is not None else "")
    raise ValueError(
      f"The checkpoint's tensor {name!r} has shape {value.shape} ({value.dtype}); {what} needs a {want} number array."
    )
  return value


def _torch_bn(sd, src: str, dst: str, out: dict, used: set) -> None:
  channels = None
  for name, (col, leaf) in {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
  }.items():
    value = tensor(sd, f"{src}.{name}", 1, "a BatchNorm", channels)
    channels = value.shape[0]
    put(out[col], f"{dst}/{leaf}", value)
    used.add(f"{src}.{name}")
  used.add(f"{src}.num_batches_tracked")


def _torch_conv(sd, src: str, dst: str, out: dict, used: set) -> None:
  kernel = tensor(sd, f"{src}.weight", 4, "a convolution [out, in, kh, kw]")
  put(out["params"], f"{dst}/kernel", np.transpose(kernel, (2, 3, 1, 0)))  # OIHW -> HWIO
  used.add(f"{src}.weight")


def _torch_linear(sd, src: str, dst: str, out: dict, used: set) -> None:
  weight = tensor(sd, f"{src}.weight", 2, "a Linear layer [out, in]")
  put(out["params"], f"{dst}/kernel", weight.T)
  bias = tensor(sd, f"{src}.bias", 1, "a Linear bias", weight.shape[0]) if f"{src}.bias" in sd else None
  put(out["params"], f"{dst}/bias", np.zeros(weight.shape[0]) if bias is None else bias)
  used.update({f"{src}.weight", f"{src}.bias"})


def torch_resnet(sd: Dict[str, np.ndarray], prefix: str = ""):
  """(variables under 'encoder', arch, input channels, names used) of a torchvision-layout ResNet at `prefix`."""
  out, used = {"params": {}, "batch_stats": {}}, set()
  if f"{prefix}conv1.weight" not in sd:
    raise ValueError(
      f"No '{prefix}conv1.weight' in the checkpoint: not a torchvision-layout ResNet "
      f"(names seen: {sorted(sd)[:6]} ...)."
    )
  stem = tensor(sd, f"{prefix}conv1.weight", 4, "the stem convolution [out, in, kh, kw]")
  width, in_channels, kh = stem.shape[0], stem.shape[1], stem.shape[2]
  _torch_conv(sd, f"{prefix}conv1", "encoder/stem_conv", out, used)
  _torch_bn(sd, f"{prefix}bn1", "encoder/stem_bn", out, used)
  blocks = sorted(
    {
      tuple(int(g) for g in m.groups())
      for m in (re.match(rf"{re.escape(prefix)}layer(\d)\.(\d+)\.", k) for k in sd)
      if m
    }
  )
  stage_sizes = [1 + max([j for i, j in blocks if i == s], default=-1) for s in (1, 2, 3, 4)]
  bottleneck = f"{prefix}layer1.0.conv3.weight" in sd
  for i, j in blocks:
    src, dst = f"{prefix}layer{i}.{j}", f"encoder/stage{i}_block{j + 1}"
    for k in range(3 if bottleneck else 2):
      _torch_conv(sd, f"{src}.conv{k + 1}", f"{dst}/Conv_{k}", out, used)
      _torch_bn(sd, f"{src}.bn{k + 1}", f"{dst}/BatchNorm_{k}", out, used)
    if f"{src}.downsample.0.weight" in sd:
      _torch_conv(sd, f"{src}.downsample.0", f"{dst}/proj_conv", out, used)
      _torch_bn(sd, f"{src}.downsample.1", f"{dst}/proj_bn", out, used)
  arch = {"depth": depth_of(stage_sizes, bottleneck), "width": int(width), "cifar_stem": kh == 3}
  return out, arch, int(in_channels), used


def torch_mlp(sd, src: str, dst: str, out: dict, used: set) -> None:
  """An authors'-layout MLP (Sequential: 0 Linear, 1 BatchNorm1d, 2 ReLU, 3 Linear) into dense1 / bn / dense2."""
  _torch_linear(sd, f"{src}.0", f"{dst}/dense1", out, used)
  _torch_bn(sd, f"{src}.1", f"{dst}/bn", out, used)
  _torch_linear(sd, f"{src}.3", f"{dst}/dense2", out, used)


def from_torchvision(sd: Dict[str, np.ndarray]) -> Imported:
  """A torchvision ResNet state_dict (conv1, bn1, layer1..4, fc): the encoder; no projector exists in it."""
  sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
  out, arch, channels, used = torch_resnet(sd)
  notes = []
  if "fc.weight" in sd:
    used.update({"fc.weight", "fc.bias"})
    classes = tensor(sd, "fc.weight", 2, "the classifier").shape[0]
    notes.append(f"the classifier fc ({classes} classes) is not part of a BYOL network: dropped")
  _check_all_used(sd, used)
  arch.update(hidden_dim=0, proj_dim=0)
  return Imported(arch, channels, out, None, "unbiased", notes)


def from_authors(sd: Dict[str, np.ndarray], network: str = "student") -> Imported:
  """A SimDis authors' checkpoint (module.<student|teacher>[_ema].{conv1, ..., fc, pred_*}): online + EMA."""
  sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
  if not any(k.startswith(f"{network}.") for k in sd):
    nets = sorted({k.split(".")[0] for k in sd})
    raise ValueError(f"The checkpoint has no '{network}.' network (it has {nets}); choose --network from those.")
  nets, notes = {}, []
  for which, prefix in (("online", f"{network}."), ("ema", f"{network}_ema.")):
    if not any(k.startswith(prefix) for k in sd):
      continue
    out, arch, channels, used = torch_resnet(sd, prefix)
    torch_mlp(sd, f"{prefix}fc", "projector", out, used)
    arch.update(
      hidden_dim=int(tensor(sd, f"{prefix}fc.0.weight", 2, "the projector").shape[0]),
      proj_dim=int(tensor(sd, f"{prefix}fc.3.weight", 2, "the projector").shape[0]),
    )
    # The BYOL predictor: the student's own-view head (sema_dv), or an online teacher's (ttemadv).
    heads = [h for h in ("sema_dv", "ttemadv") if f"{prefix}pred_{h}.0.weight" in sd]
    if which == "online" and heads:
      torch_mlp(sd, f"{prefix}pred_{heads[0]}", "predictor_sema_dv", out, used)
      notes.append(f"predictor pred_{heads[0]} -> predictor_sema_dv")
    other = sorted({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix) and k not in used})
    if which == "online" and other:
      notes.append(f"not imported (other SimDis heads): {other}")
      used.update(k for k in sd if k.startswith(prefix))
    _check_all_used({k: v for k, v in sd.items() if k.startswith(prefix)}, used)
    nets[which] = (out, arch, channels)
  out, arch, channels = nets["online"]
  ema = nets.get("ema", (None,))[0]
  return Imported(arch, channels, out, ema, "unbiased", notes)


def _check_all_used(sd, used) -> None:
  left = sorted(k for k in sd if k not in used)
  if left:
    raise ValueError(
      f"The checkpoint has entries this ResNet layout does not explain: {left[:8]}"
      f"{' ...' if len(left) > 8 else ''}. Is it a ResNet v1 of this format?"
    )
