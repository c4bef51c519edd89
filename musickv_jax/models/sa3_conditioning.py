"""Stable Audio 3's exponential Fourier features and its duration embedder.

Both the DiT's timestep features and the duration embedder use "expo" Fourier features:
`[cos, sin](2 pi x f)` with frequencies f spaced log-uniformly from `min_freq` to `max_freq`
(diffusers' `StableAudio3ExpoFourierFeatures` and `StableAudio3DurationEmbedder`).

The frequency table is a float32 constant whose rounding matters: the highest frequency is 1e4,
so one ulp of it (~1e-3) moves the angle at x = 1 by ~6e-3 rad. `expo_frequencies` computes it
the way torch's scalar code (and its CUDA kernel) does: `torch.linspace`'s float32 formula for the
ramp, the float32 exponent `ramp * (log max - log min) + log min`, then exp correctly rounded.
torch's vectorised CPU linspace and exp differ from that by an ulp at a few entries (measured on
an AVX-512 CPU: 2 of 128 entries at dim 256, e.g. 7914.0933 vs 7914.0938); the tiny test
dimensions match exactly. The duration embedder stores its table in the checkpoint (`freqs`), so
it reads the stored values (exact to diffusers on every checkpoint); the DiT computes its own.

Duration embedder: seconds (B,) -> clamp to [min_val, max_val] -> (s - min) / (max - min)
-> expo features (fourier_dim) -> Linear -> (B, output_dim). The pipeline uses the result twice:
as the DiT's global conditioning and as one extra cross-attention token after the text.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import SA3DurationConfig, to_jnp_dtype
from musickv_jax.models.layers import Dense

Array = jax.Array





def torch_linspace01(steps: int) -> np.ndarray:
  """torch.linspace(0, 1, steps) in float32 as its scalar code computes it: i * step for the first
  half, 1 - (steps - 1 - i) * step for the rest, step = 1 / (steps - 1) in float32."""
  if steps == 1:
    return np.zeros((1,), np.float32)
  step = np.float32(1.0) / np.float32(steps - 1)
  i = np.arange(steps)
  first = i < steps // 2
  from_start = i.astype(np.float32) * step
  from_end = np.float32(1.0) - (steps - 1 - i).astype(np.float32) * step
  return np.where(first, from_start, from_end).astype(np.float32)


def expo_frequencies(dim: int, min_freq: float, max_freq: float) -> np.ndarray:
  """The (dim // 2,) float32 frequency table of expo Fourier features (see the module docstring)."""
  ramp = torch_linspace01(dim // 2)
  exponent = ramp * np.float32(math.log(max_freq) - math.log(min_freq)) + np.float32(math.log(min_freq))
  return np.exp(exponent.astype(np.float64)).astype(np.float32)  # exp correctly rounded


def expo_features(x: Array, freqs: Array) -> Array:
  """x (B,), freqs (F,) -> (B, 2F) = [cos, sin](x f 2 pi), in float32 (or wider) and in torch's
  order of operations ((x * f) * 2) * pi, each product rounded in float32."""
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  angles = x.astype(dtype)[:, None] * freqs.astype(dtype)[None, :] * 2.0 * math.pi  # (B, F)
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def divide_exactly(x: Array, denominator: float) -> Array:
  """x / denominator rounded once, as torch divides by a Python number. XLA rewrites a division by
  a constant or a broadcast scalar into a multiplication by its reciprocal (two roundings: 36 % of
  normalised seconds differed from torch by an ulp, and the features multiply them by up to 2 pi 1e4);
  dividing by an array that the compiler cannot see through keeps the division."""
  full = jax.lax.optimization_barrier(jnp.full(x.shape, denominator, x.dtype))
  return x / full


class SA3DurationEmbedder(nn.Module):
  """seconds (B,) -> (B, output_dim). Parameters: `freqs` (fourier_dim // 2,) (the checkpoint's
  stored table, see the module docstring) and `linear` {kernel, bias}."""

  config: SA3DurationConfig

  @nn.compact
  def __call__(self, seconds: Array) -> Array:
    cfg = self.config
    seconds = jnp.asarray(seconds, jnp.float32)
    chex.assert_rank(seconds, 1)
    table = expo_frequencies(cfg.fourier_dim, cfg.min_freq, cfg.max_freq)
    freqs = self.param("freqs", lambda rng: jnp.asarray(table))  # (F,)
    clamped = jnp.clip(seconds, cfg.min_val, cfg.max_val)
    normalised = divide_exactly(clamped - cfg.min_val, cfg.max_val - cfg.min_val)  # (B,) in [0, 1]
    features = expo_features(normalised, freqs)  # (B, fourier_dim)
    out = Dense(cfg.output_dim, use_bias=True, dtype=to_jnp_dtype(cfg.dtype), name="linear")(features)
    chex.assert_shape(out, (seconds.shape[0], cfg.output_dim))
    return out
