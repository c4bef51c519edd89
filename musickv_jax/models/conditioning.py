"""Conditioning of Stable Audio Open: text projection, seconds conditioners, and the assembly
of the DiT's cross-attention tokens and global vector.

  cross_tokens = [T5 tokens projected, padded positions zeroed (not masked),
                  seconds_start token, seconds_total token]          (B, N + 2, cond_dim)
  global_cond  = concat(seconds_start, seconds_total)                 (B, 2 * cond_dim)
"""

from __future__ import annotations

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ConditionerConfig
from musickv_jax.models.layers import Dense

Array = jax.Array


@flax.struct.dataclass
class Conditioning:
  """What the DiT is conditioned on, for one branch of the batch."""

  cross_tokens: Array  # (B, N + 2, cond_dim)
  global_cond: Array  # (B, 2 * cond_dim)


class NumberConditioner(nn.Module):
  """A number in [min, max] -> one conditioning token: Linear([x, sin(2 pi x w), cos(2 pi x w)])."""

  config: ConditionerConfig

  @nn.compact
  def __call__(self, value: Array) -> Array:
    cfg = self.config
    value = jnp.clip(jnp.asarray(value, jnp.float32), cfg.seconds_min, cfg.seconds_max)
    x = (value - cfg.seconds_min) / (cfg.seconds_max - cfg.seconds_min)
    w = self.param("weights", nn.initializers.normal(1.0), (cfg.number_features_dim // 2,))
    angles = x[:, None] * w.astype(jnp.float32)[None, :] * 2 * np.pi
    features = jnp.concatenate([x[:, None], jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return Dense(cfg.cond_dim, dtype=jnp.float32, name="proj")(features)  # (B, cond_dim)


class Conditioner(nn.Module):
  """T5 hidden states + seconds -> Conditioning."""

  config: ConditionerConfig

  def setup(self):
    cfg = self.config
    self.text_projection = Dense(cfg.cond_dim, dtype=jnp.float32) if cfg.has_text_projection else None
    self.seconds_start = NumberConditioner(cfg)
    self.seconds_total = NumberConditioner(cfg)

  def __call__(self, text_hidden: Array, text_mask: Array, seconds_start: Array,
               seconds_total: Array) -> Conditioning:
    return self.assemble(self.project_text(text_hidden, text_mask), *self.seconds(seconds_start, seconds_total))

  def project_text(self, text_hidden: Array, text_mask: Array) -> Array:
    """(B, N, text_dim), mask (B, N) -> (B, N, cond_dim) with padded positions zeroed."""
    chex.assert_rank(text_hidden, 3)
    chex.assert_shape(text_mask, text_hidden.shape[:2])
    x = text_hidden.astype(jnp.float32)
    if self.text_projection is not None:
      x = self.text_projection(x)
    return x * text_mask[..., None].astype(jnp.float32)

  def seconds(self, seconds_start: Array, seconds_total: Array) -> tuple[Array, Array]:
    """(B,), (B,) seconds -> two (B, cond_dim) embeddings."""
    return self.seconds_start(seconds_start), self.seconds_total(seconds_total)

  @staticmethod
  def assemble(text_tokens: Array, start: Array, total: Array) -> Conditioning:
    chex.assert_equal_shape([start, total])
    cross = jnp.concatenate([text_tokens, start[:, None, :], total[:, None, :]], axis=1)
    return Conditioning(cross_tokens=cross, global_cond=jnp.concatenate([start, total], axis=-1))
