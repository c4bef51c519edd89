"""Conditioning of the Stable Audio Open family: text projection, number conditioners, and the
assembly of the DiT's cross-attention tokens and global vector (ConditionerConfig says which
numbers there are). Stable Audio Open 1.0:

  cross_tokens = [T5 tokens projected, padded positions zeroed (not masked),
                  seconds_start token, seconds_total token]          (B, N + 2, cond_dim)
  global_cond  = concat(seconds_start, seconds_total)                 (B, 2 * cond_dim)

Stable Audio Open Small: cross_tokens [T5 tokens, seconds_total] and global_cond seconds_total.
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

  cross_tokens: Array  # (B, N + 2, cond_dim); Stable Audio 3: (B, N + 1, D), the duration last
  global_cond: Array  # (B, 2 * cond_dim); Stable Audio 3: (B, D) the duration's embedding
  cross_mask: Array | None = None  # (B, N + 1) bool, Stable Audio 3: the text's padding (False), else None


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
    for name in cfg.numbers:  # named by the conditioner they are (their parameters' place in the tree)
      setattr(self, name, NumberConditioner(cfg))

  def __call__(self, text_hidden: Array, text_mask: Array, seconds_start: Array,
               seconds_total: Array) -> Conditioning:
    return self.assemble(self.project_text(text_hidden, text_mask), self.seconds(seconds_start, seconds_total))

  def project_text(self, text_hidden: Array, text_mask: Array) -> Array:
    """(B, N, text_dim), mask (B, N) -> (B, N, cond_dim) with padded positions zeroed."""
    chex.assert_rank(text_hidden, 3)
    chex.assert_shape(text_mask, text_hidden.shape[:2])
    x = text_hidden.astype(jnp.float32)
    if self.text_projection is not None:
      x = self.text_projection(x)
    return x * text_mask[..., None].astype(jnp.float32)

  def seconds(self, seconds_start: Array, seconds_total: Array) -> dict[str, Array]:
    """(B,), (B,) seconds -> a (B, cond_dim) embedding per number conditioner the model has."""
    values = {"seconds_start": seconds_start, "seconds_total": seconds_total}
    return {name: getattr(self, name)(values[name]) for name in self.config.numbers}

  def assemble(self, text_tokens: Array, numbers: dict[str, Array]) -> Conditioning:
    cfg = self.config
    chex.assert_equal_shape([numbers[name] for name in cfg.numbers])
    cross = jnp.concatenate([text_tokens] + [numbers[name][:, None, :] for name in cfg.numbers], axis=1)
    return Conditioning(cross_tokens=cross,
                        global_cond=jnp.concatenate([numbers[name] for name in cfg.global_numbers], axis=-1))
