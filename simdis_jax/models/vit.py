"""Vision Transformer encoders: ViT-Tiny (DeiT-Ti) and ViT-Small (DeiT-S / ViT-S), as timm/DeiT define them.

Patch embedding (a p x p, stride-p convolution with bias, computed as one matmul over the
flattened patches; its 'kernel' is the convolution's HWIO filter), a class token, learned position
embeddings, pre-norm blocks (LayerNorm epsilon 1e-6, multi-head self-attention with a qkv bias,
an MLP of 4x the width with exact GELU), a final LayerNorm; the feature is the class token.
With a 1000-class linear layer on it the parameter counts are timm's `deit_tiny_patch16_224`
(5,717,416) and `vit_small_patch16_224` (22,050,664).

Initialisation follows DeiT: linear layers, position embedding and class token truncated normal
(std 0.02, cut at 2 std), zero biases, LayerNorm scale 1 and offset 0; the patch convolution keeps
PyTorch's default (uniform, fan-in).

Stochastic depth: DeiT trains with drop-path rates rising linearly over the blocks to 0.1.
Self-supervised distillation here defaults to 0 (off). Branches are dropped only when the call asks
for it (stochastic_depth=True, with rngs={'dropout': key}), as the train step does for the training
forwards of a network whose rate is > 0; every other call is deterministic.

Small images: `patch_size` 4 gives 49 tokens at 28 px and 64 at 32 px (16 is the ImageNet patch).
The position embedding is sized by the image the network is initialised with. There is no
BatchNorm in the trunk: `bn_axis_name` is accepted for the common encoder contract and unused.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models.blocks import DropPath

# name: (width, blocks, heads); the MLP is 4x the width.
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6)}
LN_EPSILON = 1e-6
_trunc_normal = nn.initializers.truncated_normal(0.02)


class Attention(nn.Module):
  """Multi-head self-attention with one qkv projection (softmax in float32)."""

  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, t, d = x.shape
    dense = functools.partial(nn.Dense, kernel_init=_trunc_normal, dtype=self.dtype)
    qkv = dense(3 * d, name="qkv")(x).reshape(n, t, 3, self.heads, d // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("nqhc,nkhc->nhqk", q, k) / jnp.sqrt(d // self.heads).astype(self.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("nhqk,nkhc->nqhc", weights, v).reshape(n, t, d)
    return dense(d, name="proj")(out)


class EncoderBlock(nn.Module):
  """x + DropPath(Attention(LN(x))), then x + DropPath(MLP(LN(x)))."""

  heads: int
  mlp_dim: int
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, stochastic_depth: bool = False):
    norm = functools.partial(nn.LayerNorm, epsilon=LN_EPSILON, dtype=self.dtype)
    dense = functools.partial(nn.Dense, kernel_init=_trunc_normal, dtype=self.dtype)
    drop = DropPath(self.drop_path_rate, name="drop_path")
    deterministic = not stochastic_depth
    x = x + drop(Attention(self.heads, self.dtype, name="attn")(norm(name="norm1")(x)), deterministic=deterministic)
    y = dense(self.mlp_dim, name="fc1")(norm(name="norm2")(x))
    y = dense(x.shape[-1], name="fc2")(nn.gelu(y, approximate=False))
    return x + drop(y, deterministic=deterministic)


class PatchEmbed(nn.Module):
  """Non-overlapping p x p patches -> linear embedding (a stride-p convolution, as one matmul)."""

  dim: int
  patch_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(
        f"ViT patch_size={p} does not divide the {h}x{w} input; choose a patch size that divides "
        "the image size (16 at 224 px, 4 at 28 or 32 px)."
      )
    # PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2), out_axis=3)
    kernel = self.param("kernel", init, (p, p, c, self.dim), jnp.float32)
    bound = 1.0 / jnp.sqrt(p * p * c)
    bias = self.param("bias", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound), (self.dim,))
    patches = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, p * p * c)
    out = jnp.dot(patches.astype(self.dtype), kernel.reshape(-1, self.dim).astype(self.dtype))
    return out + bias.astype(self.dtype)


class ViT(nn.Module):
  """ViT trunk returning the final-LayerNorm class token."""

  size: str = "tiny"
  patch_size: int = 16
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None, stochastic_depth: bool = False):
    del train, bn_axis_name  # no BatchNorm (nor dropout) in a ViT: only stochastic depth differs in training
    dim, depth, heads = SIZES[self.size]
    x = PatchEmbed(dim, self.patch_size, self.dtype, name="patch_embed")(x.astype(self.dtype))
    cls = self.param("cls_token", _trunc_normal, (1, 1, dim), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, dim)), x], axis=1)
    pos = self.param("pos_embedding", _trunc_normal, (1, x.shape[1], dim), jnp.float32)
    x = x + pos.astype(self.dtype)
    for i in range(depth):
      rate = self.drop_path_rate * i / max(depth - 1, 1)  # timm: linearly from 0 to the rate
      x = EncoderBlock(heads, 4 * dim, rate, self.dtype, name=f"block{i + 1}")(x, stochastic_depth)
    x = nn.LayerNorm(epsilon=LN_EPSILON, dtype=self.dtype, name="norm")(x)
    return x[:, 0].astype(jnp.float32)


def feature_dim(size: str) -> int:
  """Size of the class-token feature: 192 (tiny) or 384 (small)."""
  return SIZES[size][0]
