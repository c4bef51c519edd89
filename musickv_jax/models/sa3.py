"""Stable Audio 3 as a whole: its four modules (the SA3 DiT, the SAME autoencoder, the T5Gemma
encoder, the duration embedder), how each is initialised abstractly, and random parameters drawn
so that every part does work (tests, the demo, benchmarks)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.models.sa3_conditioning import SA3DurationEmbedder, expo_frequencies
from musickv_jax.models.sa3_dit import SA3DiT
from musickv_jax.models.same import SAME
from musickv_jax.models.t5gemma import T5GemmaEncoder


def init_fns(config: ModelConfig) -> dict:
  """key -> the variables of each component, on arrays of the smallest shapes."""
  d, v, c = config.dit, config.vae, config.conditioner
  f32 = jnp.float32
  same = SAME(v)
  return {
      "dit": lambda key: SA3DiT(d).init(key, jnp.zeros((1, d.io_channels, d.patch_size), f32), jnp.zeros((1,), f32),
                                        jnp.zeros((1, 2, d.cond_token_dim), f32), jnp.zeros((1, d.global_cond_dim), f32)),
      "vae": lambda key: same.init(key, jnp.zeros((1, v.audio_channels, v.hop_length), f32)),  # encode and decode
      "t5": lambda key: T5GemmaEncoder(config.t5).init(key, jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)),
      "conditioner": lambda key: SA3DurationEmbedder(c).init(key, jnp.zeros((1,), f32)),
  }


def draw(rng: np.random.Generator, component: str, name: str, shape: tuple[int, ...], config: ModelConfig
         ) -> np.ndarray:
  """A random value for one parameter of a Stable Audio 3 model: kernels ~ N(0, 1/fan_in), norm gains
  and the autoencoder's running std 1, DyT's alpha 0.5, the duration embedder's frequency table as
  the model computes it (it is a formula, stored), the rest N(0, 0.02)."""
  if name == "kernel":
    fan_in = int(np.prod(shape[:-1])) if len(shape) <= 2 else int(np.prod(shape[-3:-1]))
    return rng.normal(0.0, max(fan_in, 1) ** -0.5, shape)
  if name in ("scale", "running_std"):
    return np.ones(shape)
  if name == "alpha":
    return np.full(shape, 0.5)
  if name == "freqs":
    c = config.conditioner
    return expo_frequencies(c.fourier_dim, c.min_freq, c.max_freq)
  if name == "modulation_bias":
    return rng.normal(0.0, config.dit.embed_dim ** -0.5, shape)
  if name == "bias":
    return np.zeros(shape)
  return rng.normal(0.0, 0.02, shape)
