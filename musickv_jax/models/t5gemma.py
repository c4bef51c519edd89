"""The T5Gemma encoder (google/t5gemma-b-b-ul2, Stable Audio 3's text encoder), written in Flax.

What transformers' `T5GemmaEncoderModel` computes (its `last_hidden_state`), layer for layer:
  * token embedding times sqrt(hidden_size) (the factor rounded to the matmul dtype, as Gemma does);
  * per layer: h += post_norm(attention(pre_norm(h))); h += post_norm(mlp(pre_norm(h)));
  * RMSNorm with a (1 + w) gain, statistics in float32;
  * grouped-query self-attention, rotary positions on the whole head (rotate-half layout, positions
    0..L-1 whatever the padding), scores scaled by query_pre_attn_scalar^-0.5 instead of
    head_dim^-0.5, soft-capped (cap * tanh(s / cap)), then masked: a key is visible when the prompt
    mask keeps it and, in a sliding layer, when |query - key| <= sliding_window (transformers 5.24's
    bidirectional window; earlier releases used < sliding_window);
  * a gated feed-forward down(act(gate(x)) * up(x)), act the tanh GELU;
  * a final RMSNorm.
A masked score gets float32's most negative value added, like transformers' eager attention, so a
query that sees no key at all (a padded position whose window holds only padding) averages every
value uniformly, exactly as the reference does; those positions are padding and the SA3 DiT
replaces them by its learned padding embedding, but they match the reference too.

Layers are stacked under `nn.scan`; sliding and full layers differ only by their window, which the
scan takes as data (one int per layer, `layer_windows`), so any `layer_types` pattern compiles once.
"""

from __future__ import annotations


import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from musickv_jax.config import to_jnp_dtype
from musickv_jax.config.sa3 import (  # noqa: F401 (re-exported for the converter and tests)
  ACTIVATIONS,
  FULL,
  FULL_WINDOW,
  LAYER_TYPES,
  SLIDING,
  T5GemmaConfig,
  alternating_layer_types,
)
from musickv_jax.models.attention import apply_rotary, rotary_tables
from musickv_jax.models.layers import Dense, matmul_precision, wide

Array = jax.Array




class GemmaRMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * (1 + scale), in float32 (or wider), cast back to x's dtype. `scale` is stored as
  the checkpoint stores it (zero = identity)."""

  eps: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],))
    dtype = wide(x.dtype)
    x32 = x.astype(dtype)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (y * (1.0 + scale.astype(dtype))).astype(x.dtype)


def visible_keys(key_valid: Array, window: Array) -> Array:
  """(B, 1, 1, L, L) bool: query i sees key j when key j is a prompt token and |i - j| <= window.
  key_valid (B, L) bool; window a scalar int (FULL_WINDOW for a full layer)."""
  length = key_valid.shape[1]
  positions = jnp.arange(length)
  near = jnp.abs(positions[:, None] - positions[None, :]) <= window  # (L, L)
  return key_valid[:, None, None, None, :] & near[None, None, None]  # (B, G=1, R=1, Lq, Lk)


def gemma_attention(q: Array, k: Array, v: Array, visible: Array, scale: float, softcap: float | None) -> Array:
  """Grouped-query attention with Gemma's soft-capped scores.

  q (B, L, H, D); k, v (B, L, G, D) with H a multiple of G (query head h reads kv head h // (H // G), transformers'
  repeat_kv); visible (B, 1, 1, L, L) bool. Scores, soft-cap, mask and softmax in float32 (or wider)."""
  batch, length, heads, head_dim = q.shape
  groups = k.shape[2]
  precision = matmul_precision(q.dtype)
  stat = wide(q.dtype)
  q = q.reshape(batch, length, groups, heads // groups, head_dim)  # (B, L, G, R, D)
  scores = jnp.einsum("bqgrd,bkgd->bgrqk", q, k, precision=precision, preferred_element_type=stat)
  scores = scores * jnp.asarray(scale, stat)
  if softcap is not None:
    cap = jnp.asarray(softcap, stat)
    scores = jnp.tanh(scores / cap) * cap
  scores = scores + jnp.where(visible, jnp.asarray(0.0, stat), jnp.finfo(stat).min)  # (B, G, R, Lq, Lk)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bgrqk,bkgd->bqgrd", probs, v, precision=precision)  # (B, L, G, R, D)
  return out.reshape(batch, length, heads, head_dim)


class T5GemmaAttention(nn.Module):
  config: T5GemmaConfig

  @nn.compact
  def __call__(self, x: Array, window: Array, rope: tuple[Array, Array], key_valid: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    batch, length, _ = x.shape
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = Dense(heads * head_dim, use_bias=False, dtype=dtype, name="q")(x).reshape(batch, length, heads, head_dim)
    k = Dense(kv_heads * head_dim, use_bias=False, dtype=dtype, name="k")(x).reshape(batch, length, kv_heads, head_dim)
    v = Dense(kv_heads * head_dim, use_bias=False, dtype=dtype, name="v")(x).reshape(batch, length, kv_heads, head_dim)
    cos, sin = rope
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    out = gemma_attention(q, k, v, visible_keys(key_valid, window), cfg.query_pre_attn_scalar ** -0.5,
                          cfg.attn_logit_softcapping)  # (B, L, H, D)
    return Dense(cfg.hidden_size, use_bias=False, dtype=dtype, name="o")(out.reshape(batch, length, heads * head_dim))


class T5GemmaMLP(nn.Module):
  config: T5GemmaConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    gate = Dense(cfg.intermediate_size, use_bias=False, dtype=dtype, name="gate")(x)
    up = Dense(cfg.intermediate_size, use_bias=False, dtype=dtype, name="up")(x)
    act = jax.nn.gelu(gate.astype(wide(gate.dtype)), approximate=cfg.hidden_activation == "gelu_pytorch_tanh")
    return Dense(cfg.hidden_size, use_bias=False, dtype=dtype, name="down")(act.astype(dtype) * up)


class T5GemmaLayer(nn.Module):
  """One encoder layer; `window` (a scan input) is sliding_window or FULL_WINDOW."""

  config: T5GemmaConfig

  @nn.compact
  def __call__(self, h: Array, window: Array, rope: tuple[Array, Array], key_valid: Array):
    eps = self.config.rms_norm_eps
    x = GemmaRMSNorm(eps, name="pre_attn_norm")(h)
    x = T5GemmaAttention(self.config, name="attn")(x, window, rope, key_valid)
    h = h + GemmaRMSNorm(eps, name="post_attn_norm")(x)
    x = GemmaRMSNorm(eps, name="pre_ff_norm")(h)
    x = T5GemmaMLP(self.config, name="mlp")(x)
    h = h + GemmaRMSNorm(eps, name="post_ff_norm")(x)
    return h, None


class T5GemmaEncoder(nn.Module):
  """ids (B, L) int, mask (B, L) int or bool (nonzero: a prompt token) -> hidden states (B, L, hidden_size) float32,
  equal to transformers' T5GemmaEncoderModel(ids, attention_mask=mask).last_hidden_state (left or right padding)."""

  config: T5GemmaConfig

  @nn.compact
  def __call__(self, ids: Array, mask: Array) -> Array:
    cfg = self.config
    cfg.validate()
    dtype = to_jnp_dtype(cfg.dtype)
    chex.assert_rank([ids, mask], 2)
    chex.assert_equal_shape([ids, mask])
    length = ids.shape[1]

    embedding = self.param("embedding", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.hidden_size))
    h = jnp.take(embedding, ids, axis=0).astype(dtype)  # (B, L, W)
    h = h * jnp.asarray(cfg.hidden_size ** 0.5, dtype)  # Gemma rounds the factor to the activations' dtype
    cos, sin = rotary_tables(length, cfg.head_dim, cfg.rope_theta)  # (L, D) each, positions 0..L-1
    key_valid = mask != 0  # (B, L) bool

    layers = nn.scan(T5GemmaLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.num_hidden_layers)(cfg, name="layers")
    h, _ = layers(h, jnp.asarray(cfg.layer_windows), (cos, sin), key_valid)
    out = GemmaRMSNorm(cfg.rms_norm_eps, name="final_norm")(h).astype(jnp.float32)
    chex.assert_shape(out, (ids.shape[0], length, cfg.hidden_size))
    return out
