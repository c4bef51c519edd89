"""The T5 encoder (T5-base for Stable Audio Open), written in Flax.

Relative position buckets (bidirectional), a bias table shared by all layers, unscaled
dot-product attention, RMS-style T5 LayerNorm in float32, ReLU or gated-GELU feed-forward.
Layers are stacked under `nn.scan`. In float16 (how the original SAO code runs T5) the
hidden states are clamped like transformers does, to keep them finite.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import T5Config, to_jnp_dtype
from musickv_jax.models.layers import Dense, matmul_precision

Array = jax.Array


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """(q_len, k_len) int32 bucket of (key position - query position), bidirectional.

  Half the buckets per direction; small distances get one bucket each, larger ones share
  log-spaced buckets up to max_distance."""
  relative = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
  half = num_buckets // 2
  buckets = (relative > 0).astype(np.int64) * half
  distance = np.abs(relative)
  max_exact = half // 2
  with np.errstate(divide="ignore"):
    large = max_exact + (np.log(np.maximum(distance, 1).astype(np.float32) / max_exact)
                         / math.log(max_distance / max_exact) * (half - max_exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5LayerNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * weight; statistics in float32."""

  eps: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    weight = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return weight.astype(x.dtype) * y.astype(x.dtype)


def _clamp_half(x: Array) -> Array:
  if x.dtype != jnp.float16:
    return x
  big = jnp.finfo(jnp.float16).max
  limit = jnp.where(jnp.isinf(x).any(), big - 1000, big).astype(x.dtype)
  return jnp.clip(x, -limit, limit)


class T5Layer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, h: Array, shared: tuple[Array, Array]):
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    position_bias, key_mask = shared  # (1, H, S, S) float32, (B, 1, 1, S) additive float32
    batch, seq, _ = h.shape
    inner = cfg.num_heads * cfg.d_kv

    x = T5LayerNorm(cfg.layer_norm_epsilon, name="attn_norm")(h)
    q, k, v = (Dense(inner, use_bias=False, dtype=dtype, name=n)(x).reshape(batch, seq, cfg.num_heads, cfg.d_kv)
               for n in ("q", "k", "v"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=matmul_precision(dtype),
                        preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits + position_bias + key_mask, axis=-1).astype(v.dtype)
    attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=matmul_precision(dtype)).reshape(batch, seq, inner)
    h = _clamp_half(h + Dense(cfg.d_model, use_bias=False, dtype=dtype, name="o")(attn))

    x = T5LayerNorm(cfg.layer_norm_epsilon, name="ff_norm")(h)
    if cfg.is_gated:
      act = {"gelu": lambda a: jax.nn.gelu(a, approximate=True), "silu": nn.silu}[cfg.activation]
      x = act(Dense(cfg.d_ff, use_bias=False, dtype=dtype, name="wi_0")(x)) * \
          Dense(cfg.d_ff, use_bias=False, dtype=dtype, name="wi_1")(x)
    else:
      x = nn.relu(Dense(cfg.d_ff, use_bias=False, dtype=dtype, name="wi")(x))
    h = _clamp_half(h + Dense(cfg.d_model, use_bias=False, dtype=dtype, name="wo")(x))
    return h, None


class T5Encoder(nn.Module):
  """input_ids (B, S) int, attention_mask (B, S) {0,1} -> hidden states (B, S, d_model) float32."""

  config: T5Config

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    chex.assert_rank([input_ids, attention_mask], 2)
    chex.assert_equal_shape([input_ids, attention_mask])
    seq = input_ids.shape[1]

    embedding = self.param("embedding", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.d_model))
    h = jnp.take(embedding, input_ids, axis=0).astype(dtype)

    bias_table = self.param("relative_attention_bias", nn.initializers.normal(1.0),
                            (cfg.relative_attention_num_buckets, cfg.num_heads))
    buckets = relative_position_buckets(seq, seq, cfg.relative_attention_num_buckets,
                                        cfg.relative_attention_max_distance)
    position_bias = jnp.take(bias_table.astype(jnp.float32), buckets, axis=0).transpose(2, 0, 1)[None]
    key_mask = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)

    layers = nn.scan(T5Layer, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=nn.broadcast, length=cfg.num_layers)(cfg, name="layers")
    h, _ = layers(h, (position_bias, key_mask))
    return T5LayerNorm(cfg.layer_norm_epsilon, name="final_norm")(h).astype(jnp.float32)
