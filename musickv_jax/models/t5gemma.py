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

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import to_jnp_dtype
from musickv_jax.errors import ConfigError
from musickv_jax.models.attention import apply_rotary, rotary_tables
from musickv_jax.models.layers import Dense, matmul_precision, wide

Array = jax.Array

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")  # transformers' names: the tanh approximation, the exact erf GELU
FULL_WINDOW = 2 ** 30  # the window of a full-attention layer: wider than any prompt


def alternating_layer_types(layers: int) -> tuple[str, ...]:
  """transformers' default layer_types: sliding, full, sliding, full, ..."""
  return tuple(SLIDING if i % 2 == 0 else FULL for i in range(layers))


@dataclasses.dataclass(frozen=True)
class T5GemmaConfig:
  """The T5Gemma encoder. Defaults: google/t5gemma-b-b-ul2's encoder as Stable Audio 3 uses it (12 layers of
  width 768, 12 heads of 64 with 12 key/value heads, feed-forward 2048, soft-cap 50); a real checkpoint's values
  come from its config.json (convert.t5gemma_tables.t5gemma_config_from_hf). The decoder's
  final_logit_softcapping acts on the LM head's logits only: the encoder has no such option."""

  vocab_size: int = 256000
  hidden_size: int = 768
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_key_value_heads: int = 12  # grouped-query attention when fewer than num_attention_heads
  head_dim: int = 64
  query_pre_attn_scalar: float = 64.0  # scores are scaled by query_pre_attn_scalar ** -0.5
  attn_logit_softcapping: float | None = 50.0  # None: no soft-capping
  sliding_window: int = 4096  # sliding layers see keys with |query - key| <= sliding_window
  layer_types: tuple[str, ...] = alternating_layer_types(12)  # one of LAYER_TYPES per layer
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0  # default rotary embedding only (no scaling)
  hidden_activation: str = "gelu_pytorch_tanh"  # ACTIVATIONS
  max_length: int = 256  # tokens a prompt is padded / truncated to (the SA3 pipelines' cap)
  dtype: str = "float32"  # matmul dtype; norms, softmax and rotary stay float32

  @property
  def layer_windows(self) -> np.ndarray:
    """(num_hidden_layers,) int32: each layer's attention window (FULL_WINDOW for a full layer)."""
    return np.asarray([self.sliding_window if t == SLIDING else FULL_WINDOW for t in self.layer_types], np.int32)

  def validate(self) -> None:
    to_jnp_dtype(self.dtype)
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "sliding_window", "max_length"):
      if int(getattr(self, name)) < 1:
        raise ConfigError(f"t5gemma.{name} must be at least 1, got {getattr(self, name)}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ConfigError(f"t5gemma.num_attention_heads {self.num_attention_heads} is not a multiple of "
                        f"num_key_value_heads {self.num_key_value_heads}")
    if self.head_dim % 2:
      raise ConfigError(f"t5gemma.head_dim {self.head_dim} must be even (rotary embedding)")
    if not self.query_pre_attn_scalar > 0:
      raise ConfigError(f"t5gemma.query_pre_attn_scalar must be positive, got {self.query_pre_attn_scalar}")
    if self.attn_logit_softcapping is not None and not self.attn_logit_softcapping > 0:
      raise ConfigError(f"t5gemma.attn_logit_softcapping must be positive or None, got {self.attn_logit_softcapping}")
    if len(self.layer_types) != self.num_hidden_layers:
      raise ConfigError(f"t5gemma.layer_types has {len(self.layer_types)} entries for "
                        f"{self.num_hidden_layers} layers")
    unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
    if unknown:
      raise ConfigError(f"t5gemma.layer_types: {unknown[0]!r} is not supported; use {LAYER_TYPES}")
    if self.hidden_activation not in ACTIVATIONS:
      raise ConfigError(f"t5gemma.hidden_activation {self.hidden_activation!r} is not supported; use one of "
                        f"{ACTIVATIONS}")


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
