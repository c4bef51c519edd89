"""Encoding and decoding with bounded memory: the VAE runs over windows of fixed width with
enough context (its receptive field) that the stitched result equals the one-shot pass, while
peak memory follows the window. One compiled program per window shape."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import OobleckConfig, SAMEConfig
from musickv_jax.models import same
from musickv_jax.models.oobleck import (
  LatentDistribution,
  OobleckVAE,
  decoder_receptive_radius,
  encoder_receptive_radius,
  windows,
)

DECODE_CHUNK_FRAMES = 256  # Stable Audio Open Small's whole window in one pass (15 % faster than in chunks)
ENCODE_CHUNK_FRAMES = 128


@functools.partial(jax.jit, static_argnames=("config",))
def _decode(params, latents, *, config: OobleckConfig):
  vae = OobleckVAE(config)
  return vae.apply({"params": params}, latents, method=vae.decode)


@functools.partial(jax.jit, static_argnames=("config",))
def _encode(params, audio, *, config: OobleckConfig):
  vae = OobleckVAE(config)
  dist = vae.apply({"params": params}, audio, method=vae.encode)
  return dist.mean, dist.std


def decode_traced(params, latents, config: OobleckConfig | SAMEConfig):
  """latents (B, latent_dim, T) -> audio (B, channels, T * hop) in one pass, as a traceable function
  of the parameters and latents (jit, grad: the schedule optimiser decodes through it)."""
  if isinstance(config, SAMEConfig):
    model = same.SAME(config)
    return model.apply({"params": params}, latents, method=model.decode)
  vae = OobleckVAE(config)
  return vae.apply({"params": params}, latents, method=vae.decode)


def decode(params, latents, config: OobleckConfig | SAMEConfig, chunk_frames: int | None = DECODE_CHUNK_FRAMES,
           frames: tuple[int, int] | None = None) -> np.ndarray:
  """latents (B, latent_dim, T) -> audio (B, channels, (stop - start) * hop) float32 NumPy for the
  latent frames [start, stop) = `frames` (default: all), each decoded with its receptive field of
  context from the frames around it, so a part decodes to exactly what the whole decodes to there
  (up to float32 rounding where the windows fall differently). chunk_frames=None decodes in one
  pass (of the part and its context)."""
  latents = jnp.asarray(latents, jnp.float32)
  length = latents.shape[-1]
  start, stop = (0, length) if frames is None else frames
  if not 0 <= start < stop <= length:
    raise ValueError(f"frames {frames} are not inside the {length} latent frames")
  if isinstance(config, SAMEConfig):
    return _decode_same(params, latents, config, chunk_frames, start, stop)
  hop, radius = config.hop_length, decoder_receptive_radius(config)
  if chunk_frames is None or stop - start <= chunk_frames:
    w0, w1 = (0, length) if chunk_frames is None else (max(0, start - radius), min(length, stop + radius))
    audio = np.asarray(_decode(params, latents[..., w0:w1], config=config))
    return audio[..., (start - w0) * hop:(stop - w0) * hop]
  out = np.empty((latents.shape[0], config.audio_channels, (stop - start) * hop), np.float32)
  for a, b, w0, width in windows(length, chunk_frames, radius, start, stop):
    audio = np.asarray(_decode(params, latents[..., w0:w0 + width], config=config))
    out[..., (a - start) * hop:(b - start) * hop] = audio[..., (a - w0) * hop:(b - w0) * hop]
  return out


def _decode_same(params, latents, config: SAMEConfig, chunk_frames: int | None, start: int, stop: int) -> np.ndarray:
  """SAME's decode of frames [start, stop): windows at their absolute positions (the decoder's
  rotary positions count from the first frame), each with its receptive radius of context."""
  hop, radius, length = config.hop_length, same.decoder_receptive_radius(config), latents.shape[-1]
  if chunk_frames is None:
    audio = np.asarray(same.decode(params, latents, jnp.int32(0), config=config))
    return audio[..., start * hop:stop * hop]
  out = np.empty((latents.shape[0], config.audio_channels, (stop - start) * hop), np.float32)
  for a, b, w0, width in windows(length, chunk_frames, radius, start, stop):
    audio = np.asarray(same.decode(params, latents[..., w0:w0 + width], jnp.int32(w0), config=config))
    out[..., (a - start) * hop:(b - start) * hop] = audio[..., (a - w0) * hop:(b - w0) * hop]
  return out


def encode(params, audio, config: OobleckConfig | SAMEConfig,
           chunk_frames: int | None = ENCODE_CHUNK_FRAMES) -> LatentDistribution:
  """audio (B, channels, samples), samples a multiple of the hop -> posterior over latents (SAME's
  encoding is deterministic: a posterior of zero spread)."""
  audio = jnp.asarray(audio, jnp.float32)
  hop = config.hop_length
  if audio.shape[-1] % hop:
    raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of the VAE hop {hop}")
  if isinstance(config, SAMEConfig):
    latents = same.encode(params, audio, config=config)
    return LatentDistribution(mean=latents, std=jnp.zeros_like(latents))
  frames = audio.shape[-1] // hop
  if chunk_frames is None or frames <= chunk_frames:
    mean, std = _encode(params, audio, config=config)
    return LatentDistribution(mean=mean, std=std)
  mean = np.empty((audio.shape[0], config.latent_dim, frames), np.float32)
  std = np.empty_like(mean)
  for a, b, w0, width in windows(frames, chunk_frames, encoder_receptive_radius(config)):
    m, s = _encode(params, audio[..., w0 * hop:(w0 + width) * hop], config=config)
    mean[..., a:b] = np.asarray(m)[..., a - w0:b - w0]
    std[..., a:b] = np.asarray(s)[..., a - w0:b - w0]
  return LatentDistribution(mean=jnp.asarray(mean), std=jnp.asarray(std))
