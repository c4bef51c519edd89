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


class Dense(nn.Module):
  """y = x @ kernel (+ bias); kernel is (in, out), i.e. PyTorch's Linear weight transposed."""

  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    y = jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel.astype(self.dtype),
                   precision=matmul_precision(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      y = y + bias.astype(self.dtype)
    return y


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
