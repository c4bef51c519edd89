"""Attention for the Stable Audio DiT: self-attention with partial rotary and a KV hook,
and grouped-query cross-attention.

Layout: activations are (batch, length, heads, head_dim) = 'bthd'. The attention itself is
computed by the implementation the config names (models/attention_kernels.py): the einsum
reference path, a cache-friendly blocked form of the same arithmetic, or an accelerator's fused
kernel, each chosen explicitly or by `auto` from the backend, never by what happens to be
installed.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from musickv_jax.models import attention_kernels
from musickv_jax.models.layers import Dense, wide

Array = jax.Array


def rotary_tables(length: int, rotary_dim: int, base: float = 10000.0) -> tuple[Array, Array]:
  """cos and sin tables (length, rotary_dim) for positions 0..length-1, 'rotate-half' layout:
  frequency j sits at channels j and j + rotary_dim/2."""
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # (S, r/2)
  angles = jnp.concatenate([angles, angles], axis=-1)  # (S, r)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """Rotates the first rotary_dim channels of every head of x (B, S, H, D); the rest pass through."""
  rot = cos.shape[-1]
  x_rot = x[..., :rot].astype(wide(x.dtype))
  x1, x2 = jnp.split(x_rot, 2, axis=-1)
  rotated_half = jnp.concatenate([-x2, x1], axis=-1)
  cos_b, sin_b = cos[None, :, None, :], sin[None, :, None, :]
  out = (x_rot * cos_b + rotated_half * sin_b).astype(x.dtype)
  return jnp.concatenate([out, x[..., rot:]], axis=-1)


def blend_kv(own: Array, reference: Array, weight: Array) -> Array:
  """weight * reference + (1 - weight) * own, per sample. weight: (B,) broadcast over (B, S, H, D).

  Written as own + weight * (reference - own), so that it is exact where it must be: weight 0
  returns `own`, a reference equal to `own` returns `own` (an edit of the source by itself is the
  source, bit for bit), and weight 1 returns `reference` (selected, since own + (ref - own) can
  round)."""
  dtype = wide(own.dtype)
  w = weight.astype(dtype)[:, None, None, None]
  own_wide, reference_wide = own.astype(dtype), reference.astype(dtype)
  mixed = own_wide + w * (reference_wide - own_wide)
  return jnp.where(w == 1.0, reference_wide, mixed).astype(own.dtype)


class QKNorm(nn.Module):
  """Normalisation of each head's queries or keys (B, S, H, D) over D, computed in float32:
    ln    LayerNorm with weight and bias            rms  RMSNorm with a gain
    l2    unit length (x / max(|x|, eps))           dyt  gain * tanh(alpha x) + bias
  (stable-audio-tools' attn_kwargs.qk_norm; Stable Audio Open Small uses ln)."""

  kind: str
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    dtype = wide(x.dtype)
    x32 = x.astype(dtype)
    d = x.shape[-1]
    if self.kind == "ln":
      centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
      y = centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + self.eps)
      y = y * self.param("scale", nn.initializers.ones, (d,)).astype(dtype) \
          + self.param("bias", nn.initializers.zeros, (d,)).astype(dtype)
    elif self.kind == "rms":
      y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
      y = y * self.param("scale", nn.initializers.ones, (d,)).astype(dtype)
    elif self.kind == "l2":
      y = x32 / jnp.maximum(jnp.linalg.norm(x32, axis=-1, keepdims=True), self.eps)
    elif self.kind == "dyt":
      alpha = self.param("alpha", nn.initializers.constant(4.0), (1,)).astype(dtype)
      y = jnp.tanh(alpha * x32) * self.param("scale", nn.initializers.ones, (d,)).astype(dtype) \
          + self.param("bias", nn.initializers.zeros, (d,)).astype(dtype)
    else:
      raise ValueError(f"unknown qk_norm {self.kind!r}")
    return y.astype(x.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention with rotary positions and the MusicKV hook.

  The hook works on the keys and values the attention uses, before rotary (positions are
  identical for source and edit, so blending commutes with rotary), after the per-head q/k
  normalisation where the model has one (a blend does not commute with a norm: the keys that
  attention sees are the normalised ones):
    * `qkv(x)` returns (q, k, v), each (B, S, H, D): the K/V a cache records;
    * `attend(q, k, v, rope)` finishes the layer from (possibly replaced) K/V.
  The DiT block calls the two halves and blends between them (see models/dit.py).
  """

  width: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32
  implementation: str = "xla"  # see models/attention_kernels.py
  qk_norm: str = "none"
  qk_norm_eps: float = 1e-6

  def setup(self):
    self.q = Dense(self.width, use_bias=False, dtype=self.dtype)
    self.k = Dense(self.width, use_bias=False, dtype=self.dtype)
    self.v = Dense(self.width, use_bias=False, dtype=self.dtype)
    self.out = Dense(self.width, use_bias=False, dtype=self.dtype)
    if self.qk_norm != "none":
      self.q_norm = QKNorm(self.qk_norm, self.qk_norm_eps)
      self.k_norm = QKNorm(self.qk_norm, self.qk_norm_eps)

  def _split_heads(self, x: Array) -> Array:
    return x.reshape(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads)

  def qkv(self, x: Array) -> tuple[Array, Array, Array]:
    q, k, v = (self._split_heads(proj(x)) for proj in (self.q, self.k, self.v))
    if self.qk_norm != "none":
      q, k = self.q_norm(q), self.k_norm(k)
    return q, k, v

  def attend(self, q: Array, k: Array, v: Array, rope: tuple[Array, Array]) -> Array:
    cos, sin = rope
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = attention_kernels.attention(q, k, v, self.implementation, self_attention=True)  # (B, S, H, D)
    return self.out(out.reshape(*out.shape[:2], -1))


class CrossAttention(nn.Module):
  """Cross-attention to the conditioning tokens, grouped-query (kv_heads < num_heads), no rotary."""

  width: int
  num_heads: int
  kv_heads: int
  dtype: jnp.dtype = jnp.float32
  implementation: str = "xla"
  qk_norm: str = "none"  # as in SelfAttention; padded context tokens (zeros) get keys = the norm's bias
  qk_norm_eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    head_dim = self.width // self.num_heads
    q = Dense(self.width, use_bias=False, dtype=self.dtype, name="q")(x)
    k = Dense(self.kv_heads * head_dim, use_bias=False, dtype=self.dtype, name="k")(context)
    v = Dense(self.kv_heads * head_dim, use_bias=False, dtype=self.dtype, name="v")(context)
    q = q.reshape(*q.shape[:-1], self.num_heads, head_dim)
    k = k.reshape(*k.shape[:-1], self.kv_heads, head_dim)
    v = v.reshape(*v.shape[:-1], self.kv_heads, head_dim)
    if self.qk_norm != "none":
      q = QKNorm(self.qk_norm, self.qk_norm_eps, name="q_norm")(q)
      k = QKNorm(self.qk_norm, self.qk_norm_eps, name="k_norm")(k)
    out = attention_kernels.attention(q, k, v, self.implementation, self_attention=False)
    return Dense(self.width, use_bias=False, dtype=self.dtype, name="out")(out.reshape(*out.shape[:2], -1))
