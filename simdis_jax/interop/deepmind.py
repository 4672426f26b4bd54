"""DeepMind's BYOL checkpoints (deepmind-research/byol, JAX + Haiku) as this project's Network variables.

The file (e.g. pretrain_res50x1.pkl) is what byol/utils/checkpointing.py writes with dill
(protocol 2): {'experiment_state': _ByolExperimentState(online_params, target_params,
online_state, target_state, opt_state), 'step', 'rng'}, the arrays as NumPy arrays (one
device's copy) and the params/state mappings as Haiku's FlatMapping (2020) or dicts. The
reader here resolves only NumPy's array reconstruction, those mappings and dill's namedtuple
factory; every other class becomes an inert record and is never imported.

Haiku names (module 'res_net50' for networks.ResNet50, 'res_net200' for ResNet200 ...):
  <net>/~/initial_conv {w: HWIO}, <net>/~/initial_batchnorm {scale, offset: [1, 1, 1, C]}
  <net>/~/block_group_<i>/~/block_<j>/~/conv_<k> | batchnorm_<k> | shortcut_conv | shortcut_batchnorm
  projector|predictor/linear {w: [in, out], b}, /batch_norm, /linear_1 {w} (no bias)
  state: <bn>/~/mean_ema and <bn>/~/var_ema, each {counter, hidden, average}
('/~/' joins a module made in its parent's constructor, '/' one made in its parent's __call__: the
ResNet builds its layers in __init__, BYOL's MLP in __call__.)
BN in eval mode uses `average` (the zero-debiased EMA of the biased batch variance), so
it maps to mean/var unchanged and the run keeps Flax's biased convention; `hidden` (the raw EMA)
maps to mean_hidden/var_hidden and `counter` to counter, so that training goes on exactly as Haiku's
(models/batch_norm.py HaikuBatchNorm). BYOL's MLPs end in a Linear without bias: head_bias=False.
`to_haiku` writes a style="haiku" network back under these names (both averages and the counter).
"""

import collections
import keyword
import pickle
import re
from typing import Any, Dict, Tuple

import numpy as np

from simdis_jax.interop import convert

# The fields of byol_experiment._ByolExperimentState, in order (a by-reference pickle gives them positionally).
STATE_FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")


class Record:
  """An object of a class this reader does not import (e.g. jax's array types): its arguments, kept inert."""

  name = "?"

  def __new__(cls, *args, **kwargs):
    obj = super().__new__(cls)
    obj.args, obj.kwargs, obj.state = args, kwargs, None
    return obj

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f"Record({self.name})"


def _namedtuple(name, fields, module=None, *unused):
  """dill._dill._create_namedtuple (name, fields, module[, defaults]): a plain namedtuple of those fields."""
  del module, unused  # nothing is imported
  fields = tuple(str(f) for f in fields)
  if not all(f.isidentifier() and not keyword.iskeyword(f) for f in fields):
    raise pickle.UnpicklingError(f"namedtuple {name!r} with invalid field names {fields}")
  return collections.namedtuple(re.sub(r"\W", "_", str(name)) or "Record", fields)


def _latin1_bytes(text, encoding="latin1"):
  """_codecs.encode as protocol-2 pickles use it for bytes (latin-1 only)."""
  if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
    raise pickle.UnpicklingError("_codecs.encode is allowed only for latin-1 bytes")
  return text.encode("latin1")


def _numpy_name(module: str, name: str):
  from numpy._core import multiarray  # pylint: disable=import-outside-toplevel

  allowed = {
    "_reconstruct": multiarray._reconstruct,
    "scalar": multiarray.scalar,  # pylint: disable=protected-access
    "ndarray": np.ndarray,
    "dtype": np.dtype,
  }
  if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in allowed:
    return allowed[name]
  return None


class _Unpickler(pickle.Unpickler):
  """NumPy arrays, dicts, Haiku's mappings and namedtuples; anything else becomes a Record."""

  def find_class(self, module, name):
    found = _numpy_name(module, name)
    if found is not None:
      return found
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module.startswith("haiku") and name in ("FlatMapping", "frozendict", "FrozenDict"):
      return dict  # FlatMapping.__reduce__ is (FlatMapping, (a dict,))
    if (module, name) == ("dill._dill", "_create_namedtuple"):
      return _namedtuple
    if (module, name) == ("_codecs", "encode"):
      return _latin1_bytes
    return type("Record", (Record,), {"name": f"{module}.{name}"})


def load(path: str) -> Any:
  """The object a DeepMind BYOL checkpoint pickle holds, arrays as NumPy arrays."""
  with open(path, "rb") as f:
    try:
      return _Unpickler(f).load()
    except (pickle.UnpicklingError, EOFError) as e:
      raise ValueError(
        f"{path} is not a readable pickle ({e}); --format deepmind reads DeepMind's BYOL .pkl checkpoints."
      ) from e


def experiment_state(obj: Any) -> Dict[str, Any]:
  """{'online_params', 'online_state', and 'target_params'/'target_state' when present} of a loaded checkpoint."""
  es = obj.get("experiment_state", obj) if isinstance(obj, dict) else obj
  if isinstance(es, Record) and es.name.endswith("_ByolExperimentState"):
    es = dict(zip(STATE_FIELDS, es.args))
  elif hasattr(es, "_fields"):
    es = es._asdict()
  if not isinstance(es, dict) or not isinstance(es.get("online_params"), dict):
    raise ValueError(
      "The pickle holds no BYOL experiment state (online_params / online_state): not a checkpoint "
      "of deepmind-research/byol's pretraining."
    )
  return {k: es[k] for k in STATE_FIELDS[:4] if isinstance(es.get(k), dict)}


def _channels(v) -> np.ndarray:
  """A Haiku BN parameter or statistic [1, ..., 1, C] as [C]."""
  return np.asarray(v, np.float32).reshape(-1)


class _Mapper:
  """Moves one network's Haiku params/state into {'params', 'batch_stats'}, remembering what it used."""

  def __init__(self, params: dict, state: dict):
    self.params, self.state, self.used = params, state, set()
    self.out = {"params": {}, "batch_stats": {}}

  def take(self, module: str, name: str, kind: str = "params"):
    src = self.params if kind == "params" else self.state
    if module not in src or name not in src[module]:
      raise ValueError(f"The checkpoint lacks {kind} '{module}' / '{name}'.")
    self.used.add((kind, module))
    return src[module][name]

  def conv(self, src: str, dst: str) -> None:
    convert.put(self.out["params"], f"{dst}/kernel", self.take(src, "w"))  # Haiku's Conv2D is HWIO already

  def bn(self, src: str, dst: str) -> None:
    convert.put(self.out["params"], f"{dst}/scale", _channels(self.take(src, "scale")))
    convert.put(self.out["params"], f"{dst}/bias", _channels(self.take(src, "offset")))
    counters = set()
    for ema, leaf in (("mean_ema", "mean"), ("var_ema", "var")):
      convert.put(self.out["batch_stats"], f"{dst}/{leaf}", _channels(self.take(f"{src}/~/{ema}", "average", "state")))
      convert.put(
        self.out["batch_stats"], f"{dst}/{leaf}_hidden", _channels(self.take(f"{src}/~/{ema}", "hidden", "state"))
      )
      counters.add(int(np.asarray(self.take(f"{src}/~/{ema}", "counter", "state"))))
    if len(counters) != 1:
      raise ValueError(
        f"'{src}': its mean_ema and var_ema counters differ ({sorted(counters)}); Haiku moves them "
        "together, so the file is not a BYOL checkpoint."
      )
    convert.put(self.out["batch_stats"], f"{dst}/counter", np.float32(counters.pop()))

  def mlp(self, src: str, dst: str) -> Tuple[int, int]:
    """BYOL's MLP (linear -> batch_norm -> relu -> linear_1 without bias): (hidden, out) sizes."""
    w1, w2 = self.take(f"{src}/linear", "w"), self.take(f"{src}/linear_1", "w")
    convert.put(self.out["params"], f"{dst}/dense1/kernel", w1)
    convert.put(self.out["params"], f"{dst}/dense1/bias", self.take(f"{src}/linear", "b"))
    self.bn(f"{src}/batch_norm", f"{dst}/bn")
    convert.put(self.out["params"], f"{dst}/dense2/kernel", w2)  # no bias (head_bias=False)
    return int(w1.shape[1]), int(w2.shape[1])


def _encoder_name(params: dict) -> str:
  names = sorted({k.split("/~/")[0] for k in params if k.endswith("/~/initial_conv")})
  if len(names) != 1:
    raise ValueError(
      f"Expected one ResNet ('<name>/~/initial_conv') in the checkpoint, found {names} "
      f"(modules: {sorted(params)[:6]} ...)."
    )
  return names[0]


def _network(params: dict, state: dict, with_predictor: bool) -> Tuple[dict, dict, int, list]:
  """(variables, arch, input channels, notes) of one BYOL network (encoder, projector, [predictor])."""
  m, net = _Mapper(params, state), _encoder_name(params)
  if f"{net}/~/final_batchnorm" in params or f"{net}/~/initial_batchnorm" not in params:
    raise ValueError(f"'{net}' is a ResNet v2 (resnet_v2=True): only BYOL's ResNet v1 networks are supported.")
  stem = np.asarray(params[f"{net}/~/initial_conv"]["w"])
  if stem.shape[:2] != (7, 7):
    raise ValueError(f"'{net}/~/initial_conv' is {stem.shape[0]}x{stem.shape[1]}: BYOL's ResNets have a 7x7 stem.")
  m.conv(f"{net}/~/initial_conv", "encoder/stem_conv")
  m.bn(f"{net}/~/initial_batchnorm", "encoder/stem_bn")
  pattern = re.compile(rf"{re.escape(net)}/~/block_group_(\d)/~/block_(\d+)/")
  blocks = sorted({(int(g.group(1)), int(g.group(2))) for g in map(pattern.match, params) if g})
  stage_sizes = [1 + max([j for i, j in blocks if i == s], default=-1) for s in range(4)]
  bottleneck = f"{net}/~/block_group_0/~/block_0/~/conv_2" in params
  for i, j in blocks:
    src, dst = f"{net}/~/block_group_{i}/~/block_{j}/~/", f"encoder/stage{i + 1}_block{j + 1}/"
    for k in range(3 if bottleneck else 2):
      m.conv(f"{src}conv_{k}", f"{dst}Conv_{k}")
      m.bn(f"{src}batchnorm_{k}", f"{dst}BatchNorm_{k}")
    has_proj = f"{src}shortcut_conv" in params
    if has_proj != (j == 0):  # style="haiku" projects exactly in every stage's first block
      raise ValueError(
        f"'{src}' {'has' if has_proj else 'lacks'} a projection shortcut: this ResNet is not "
        "BYOL's layout (use_projection=True in all four stages)."
      )
    if has_proj:
      m.conv(f"{src}shortcut_conv", f"{dst}proj_conv")
      m.bn(f"{src}shortcut_batchnorm", f"{dst}proj_bn")
  hidden, proj = m.mlp("projector", "projector")
  notes = []
  if with_predictor and "predictor/linear" in params:
    pred_hidden, pred_out = m.mlp("predictor", "predictor_sema_dv")
    if (pred_hidden, pred_out) != (hidden, proj):
      raise ValueError(
        f"The predictor is {pred_hidden}->{pred_out} but the projector {hidden}->{proj}: this "
        "project's predictor has the projector's sizes."
      )
    notes.append("predictor -> predictor_sema_dv")
  left = sorted(k for k in params if ("params", k) not in m.used and not k.startswith(("predictor/", "classifier")))
  left += sorted(k for k in state if ("state", k) not in m.used and not k.startswith("predictor/"))
  if left:
    raise ValueError(f"The checkpoint has modules this ResNet layout does not explain: {left[:8]}.")
  arch = {
    "depth": convert.depth_of(stage_sizes, bottleneck),
    "width": int(stem.shape[3]),
    "cifar_stem": False,
    "hidden_dim": hidden,
    "proj_dim": proj,
    "style": "haiku",
    "head_bias": False,
  }
  return m.out, arch, int(stem.shape[2]), notes


def from_deepmind(obj: Any) -> convert.Imported:
  """A loaded DeepMind BYOL checkpoint: the online network (with predictor) and the target as the EMA."""
  es = experiment_state(obj)
  if "online_state" not in es:
    raise ValueError("The checkpoint has online_params but no online_state (the BN statistics).")
  online, arch, channels, notes = _network(es["online_params"], es["online_state"], True)
  ema = None
  if "target_params" in es and "target_state" in es:
    ema, target_arch, _, _ = _network(es["target_params"], es["target_state"], False)
    if target_arch != arch:
      raise ValueError(f"The target network {target_arch} differs from the online one {arch}.")
    notes.append("target network -> EMA (its predictor and classifier are unused by BYOL: dropped)")
  if "classifier" in es["online_params"]:
    notes.append("the online linear classifier (trained during pretraining) is not part of the network: dropped")
  return convert.Imported(arch, channels, online, ema, "biased", notes)


def _haiku_bn(params: dict, stats: dict, dst: str, out: Tuple[dict, dict], rank: int = 4) -> None:
  """One style="haiku" BN as Haiku's params {scale, offset} and state {counter, hidden, average}, each
  [1, ..., 1, C] of the input's rank (4 in the ResNet, 2 in the MLPs)."""
  shape = (1,) * (rank - 1) + (-1,)
  out[0][dst] = {"scale": params["scale"].reshape(shape), "offset": params["bias"].reshape(shape)}
  for leaf in ("mean", "var"):
    out[1][f"{dst}/~/{leaf}_ema"] = {
      "counter": np.asarray(stats["counter"]).astype(np.int32),
      "hidden": stats[f"{leaf}_hidden"].reshape(shape),
      "average": stats[leaf].reshape(shape),
    }


def to_haiku(variables: dict, net: str) -> Tuple[dict, dict]:
  """(params, state) of a style="haiku" network's {'params', 'batch_stats'} under BYOL's Haiku names.

  `net` is the torso's module name ('res_net50', 'res_net18'); every array keeps its dtype (counters
  become int32, as Haiku's). The inverse of the import above for the encoder, projector and predictors
  (predictor_<head> -> 'predictor'; with several heads, the first); the online classifier (`probe`)
  becomes 'classifier'.
  """
  params, stats = variables["params"], variables["batch_stats"]
  out: Tuple[dict, dict] = ({}, {})
  enc, enc_stats = params["encoder"], stats["encoder"]
  out[0][f"{net}/~/initial_conv"] = {"w": enc["stem_conv"]["kernel"]}
  _haiku_bn(enc["stem_bn"], enc_stats["stem_bn"], f"{net}/~/initial_batchnorm", out)
  for name in enc:
    match = re.fullmatch(r"stage(\d)_block(\d+)", name)
    if not match:
      continue
    src = f"{net}/~/block_group_{int(match.group(1)) - 1}/~/block_{int(match.group(2)) - 1}/~/"
    block, block_stats = enc[name], enc_stats[name]
    for layer in block:
      if layer.startswith("Conv_"):
        out[0][f"{src}conv_{layer[5:]}"] = {"w": block[layer]["kernel"]}
      elif layer.startswith("BatchNorm_"):
        _haiku_bn(block[layer], block_stats[layer], f"{src}batchnorm_{layer[10:]}", out)
    if "proj_conv" in block:
      out[0][f"{src}shortcut_conv"] = {"w": block["proj_conv"]["kernel"]}
      _haiku_bn(block["proj_bn"], block_stats["proj_bn"], f"{src}shortcut_batchnorm", out)
  heads = [("projector", "projector")] + [(k, "predictor") for k in params if k.startswith("predictor_")][:1]
  for src, dst in heads:
    mlp = params[src]
    out[0][f"{dst}/linear"] = {"w": mlp["dense1"]["kernel"], "b": mlp["dense1"]["bias"]}
    _haiku_bn(mlp["bn"], stats[src]["bn"], f"{dst}/batch_norm", out, rank=2)
    out[0][f"{dst}/linear_1"] = {
      "w": mlp["dense2"]["kernel"],
      **({"b": mlp["dense2"]["bias"]} if "bias" in mlp["dense2"] else {}),
    }
  if "probe" in params:
    out[0]["classifier"] = {"w": params["probe"]["kernel"], "b": params["probe"]["bias"]}
  return out
