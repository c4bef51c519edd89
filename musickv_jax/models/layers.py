"""Small building blocks shared by the models: dense layers, norms, precision policy."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def wide(dtype) -> jnp.dtype:
  """The dtype that norms, softmax, Snake and blends compute in: float32, or float64 for a float64
  model (a research setting: gradient checks by finite differences). bfloat16 / float16 widen to
  float32; float32 stays float32, so nothing changes for the usual dtypes."""
  return jnp.promote_types(dtype, jnp.float32)


def matmul_precision(dtype) -> jax.lax.Precision:
  """float32 models run true float32 matmuls (parity with PyTorch on every backend);
  reduced-precision models take the backend's fast path."""
  return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


# On CPU, a (tokens, width) block of the feed-forward runs fastest at about this many tokens: the
# block's GLU intermediate stays in cache. Measured on the full window (4 rows x 1025 tokens: 13 %
# faster one row at a time) and at 384 frames (4 x 385: fastest whole): docs/performance.md.
# GPUs and TPUs want the whole batch.
CPU_BLOCK_TOKENS = 2048


def in_row_blocks(fn, x: Array) -> Array:
  """fn(x) for x (B, S, D), computed on CPU in blocks of whole batch rows of at most
  CPU_BLOCK_TOKENS tokens (`lax.map` over the blocks); elsewhere, or when the batch fits one
  block, on the whole batch."""
  if x.ndim != 3 or jax.default_backend() != "cpu":
    return fn(x)
  rows, tokens = x.shape[0], x.shape[1]
  per_block = max(d for d in range(1, rows + 1) if rows % d == 0 and (d == 1 or d * tokens <= CPU_BLOCK_TOKENS))
  if per_block == rows:
    return fn(x)
  blocks = jax.lax.map(fn, x.reshape(rows // per_block, per_block, *x.shape[1:]))
  return blocks.reshape(rows, *blocks.shape[2:])


def dense_init(features_in: int, features_out: int, use_bias: bool = True):
  """Initialiser of a Dense-shaped parameter dict {'kernel' (in, out), 'bias' (out,)} declared with
  `self.param`, for layers applied inside a JAX transform (e.g. in_row_blocks)."""
  def init(rng):
    params = {"kernel": nn.initializers.lecun_normal()(rng, (features_in, features_out))}
    if use_bias:
      params["bias"] = jnp.zeros((features_out,))
    return params
  return init


def dense_apply(params: dict, x: Array, dtype) -> Array:
  """What Dense computes, from its parameter dict."""
  y = jnp.einsum("...i,io->...o", x.astype(dtype), params["kernel"].astype(dtype), precision=matmul_precision(dtype))
  if "bias" in params:
    y = y + params["bias"].astype(dtype)
  return y


class Dense(nn.Module):
  """y = x @ kernel (+ bias); kernel is (in, out), i.e. PyTorch's Linear weight transposed."""

  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    params = {"kernel": self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))}
    if self.use_bias:
      params["bias"] = self.param("bias", nn.initializers.zeros, (self.features,))
    return dense_apply(params, x, self.dtype)


class LayerNorm(nn.Module):
  """PyTorch LayerNorm semantics (biased variance of centred input), computed in float32 (or wider)."""

  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    dtype = wide(x.dtype)
    x32 = x.astype(dtype)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(var + self.eps)
    return (y * scale.astype(dtype) + bias.astype(dtype)).astype(x.dtype)


class MLP2(nn.Module):
  """Linear -> SiLU -> Linear, the conditioning projections of the DiT."""

  hidden: int
  features: int
  use_bias: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = Dense(self.hidden, use_bias=self.use_bias, dtype=self.dtype, name="in")(x)
    x = nn.silu(x)
    return Dense(self.features, use_bias=self.use_bias, dtype=self.dtype, name="out")(x)
