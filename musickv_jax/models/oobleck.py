"""The Oobleck autoencoder of Stable Audio Open.

Audio is (B, channels, samples) and latents (B, latent_dim, frames) at the API, like the
PyTorch models; inside, activations are (B, time, channels). Weight norm is folded into
plain conv kernels by the converter (inference needs only w = g * v / ||v||). Kernels are
(K, C_in, C_out) for convs and (K, C_in, C_out) in PyTorch's orientation for transposed convs.

Long inputs: `decode_chunked` / `encode_chunked` split time into windows with enough
overlap to cover the receptive field, so the result equals the one-shot pass while peak
memory follows the window, not the whole clip.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import OobleckConfig, to_jnp_dtype
from musickv_jax.models.layers import matmul_precision, wide

Array = jax.Array

_DN = ("NWC", "WIO", "NWC")


class Conv1d(nn.Module):
  """PyTorch Conv1d semantics (zero padding on both sides)."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(self.stride,),
        padding=[(self.padding, self.padding)], rhs_dilation=(self.dilation,), dimension_numbers=_DN,
        precision=matmul_precision(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class ConvTranspose1d(nn.Module):
  """PyTorch ConvTranspose1d semantics: output length (L - 1) * stride - 2 * padding + K.

  Computed as a stride-dilated input convolved with the flipped kernel."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel_size, x.shape[-1], self.features))
    edge = self.kernel_size - 1 - self.padding
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), jnp.flip(kernel, axis=0).astype(self.dtype), window_strides=(1,),
        padding=[(edge, edge)], lhs_dilation=(self.stride,), dimension_numbers=_DN,
        precision=matmul_precision(self.dtype))
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


_PI_HI = np.float32(3.140625)  # pi in two parts: k * _PI_HI is exact for |k| < 2**15
_PI_LO = np.float32(np.pi - 3.140625)

# Below this |z| the two-part reduction above is within the bound (3.3e-7 measured without fused
# multiply-adds, less with them); from it to the largest float32, the exact reduction below.
_SIN_FAST_BELOW = np.float32(2.0 ** 13)

# The first 192 bits of 1/pi (1/pi = 0x0.517CC1B7...), checked against an integer computation of pi
# by tests/test_sin_squared.py. The exact reduction reads them as six 32-bit words of 2**-16 / pi
# (16 zero bits first, so that every float32 from 2**13 up finds its window at a bit offset >= 0).
_INV_PI_HEX = "517CC1B727220A94FE13ABE8FA9A6EE06DB14ACC9E21C820"
_INV_PI_WORDS = tuple(np.uint32((int(_INV_PI_HEX, 16) >> 16 >> (32 * (5 - i))) & 0xFFFFFFFF) for i in range(6))


def _reduce_fast(z: Array) -> Array:
  """z - k pi in [-pi/2, pi/2] (Cody-Waite, two-part pi): within the bound for |z| < _SIN_FAST_BELOW."""
  k = jnp.round(z * np.float32(1 / np.pi))
  return (z - k * _PI_HI) - k * _PI_LO


def _reduce_exact(a: Array) -> Array:
  """a - k pi, in [-pi/2, pi/2], for float32 a from _SIN_FAST_BELOW to the largest float32 (Payne-Hanek
  in 32-bit integers): a / pi mod 1 to a few units of 2**-32, then one float32 rounding and a product
  with pi. No table look-ups (XLA's CPU code makes them scalar): selects and shifts pick the bits of
  1/pi. Garbage, but finite, for smaller a, inf and NaN.

  a = m 2**(e - 150) with m the 24-bit integer mantissa, so a / pi mod 1 = m * frac(2**(e - 150) / pi)
  mod 1, and frac(2**(e - 150) / pi) is the bits of 2**-16 / pi from bit p = e - 134 on: a0 and a1,
  the two 32-bit words there. m * a0 mod 2**32 (the integer product's low word, exact) is the
  fraction to 2**-32; m * a1 / 2**32 (< 2**24, in float32 to a few units) carries into it; the rest
  of the bits add less than 2**-40."""
  bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
  p = (bits >> 23) - np.uint32(134)  # the window's first bit; wraps around below 2**7 (then unused)
  q, s, s_rev = p >> 5, p & 31, ~p & 31  # s_rev = 31 - s
  w = _INV_PI_WORDS

  def word(i):  # w[q + i], q in 0..3 (1 from 2**39, 2 from 2**71, 3 from 2**103), as selects that vectorise
    return jnp.where(q == 3, w[i + 3], jnp.where(q == 2, w[i + 2], jnp.where(q == 1, w[i + 1], w[i])))

  w0, w1, w2 = word(0), word(1), word(2)
  a0 = (w0 << s) | ((w1 >> 1) >> s_rev)  # (w1 >> 1) >> (31 - s): no shift by 32 when s = 0
  a1 = (w1 << s) | ((w2 >> 1) >> s_rev)
  m = (bits & 0x7FFFFF) | 0x800000
  carry = jnp.round(m.astype(jnp.int32).astype(jnp.float32)
                    * ((a1 >> 1).astype(jnp.int32).astype(jnp.float32) * np.float32(2.0 ** -31)))
  turns = jax.lax.bitcast_convert_type(m * a0 + carry.astype(jnp.int32).astype(jnp.uint32), jnp.int32)
  return turns.astype(jnp.float32) * np.float32(np.pi * 2.0 ** -32)  # (a / pi mod 1, in [-1/2, 1/2)) * pi


@jax.custom_jvp
def _at_most_one(x: Array) -> Array:
  """min(x, 1), with the derivative of x: the clip only undoes rounding, and sin^2's slope there is
  not zero."""
  return jnp.minimum(x, np.float32(1))


@_at_most_one.defjvp
def _at_most_one_jvp(primals, tangents):
  return _at_most_one(primals[0]), tangents[0]


def _sin_squared_reduced(r: Array) -> Array:
  """sin(r)^2 for r in [-pi/2, pi/2]: the Taylor series of sin to r^13 (error < 6e-9 there), squared,
  and at most 1 (the square rounds to 1 + 2 ulps near r = pi/2)."""
  r2 = r * r
  sin_r = r * (1 + r2 * (-1 / 6 + r2 * (1 / 120 + r2 * (-1 / 5040 + r2 * (1 / 362880 + r2 * (
      -1 / 39916800 + r2 * (1 / 6227020800)))))))
  return _at_most_one(sin_r * sin_r)


def _sin_squared_fast(z: Array) -> Array:
  return _sin_squared_reduced(_reduce_fast(z))


def _sin_squared_exact(z: Array) -> Array:
  a = jnp.abs(z)
  # The exact reduction has no derivative; r's is d|z|/dz (sin^2 is even), and a - a also makes
  # inf and NaN into NaN.
  r_large = jax.lax.stop_gradient(_reduce_exact(a)) + (a - jax.lax.stop_gradient(a))
  return _sin_squared_reduced(jnp.where(a < _SIN_FAST_BELOW, _reduce_fast(z), r_large))


def map_sin_squared(z: Array, then=lambda s: s) -> Array:
  """then(sin(z)^2) elementwise, as `sin_squared` computes it, with `then` (elementwise: the
  Snake's x + s / beta) in the same fused loop.

  float32 (and narrower, computed in float32): a reduction finds max |z| (one more read of z); below
  _SIN_FAST_BELOW (the usual case) the loop is the fast reduction and the polynomial, else it also
  computes the exact reduction for every element and selects (about twice the loop's time on CPU,
  which is why it is not always computed). Under vmap the cond becomes a select: both loops run.
  float64: jnp.sin."""
  z = jnp.asarray(z)
  if z.dtype == jnp.float64:
    return then(jnp.sin(z) ** 2)
  if z.dtype != jnp.float32:
    return map_sin_squared(z.astype(jnp.float32), lambda s: then(s.astype(z.dtype)))
  usual = jnp.max(jnp.abs(z), initial=0.0) < _SIN_FAST_BELOW  # NaN or inf: the exact loop (NaN out)
  return jax.lax.cond(usual, lambda z: then(_sin_squared_fast(z)), lambda z: then(_sin_squared_exact(z)), z)


def sin_squared(z: Array) -> Array:
  """sin(z)^2 within 4e-7 (absolute; about 7 float32 ulps of 1) of float64 for every finite float32 z,
  up to the largest float32, and always in [0, 1]; NaN for inf or NaN. jnp.sin's own error is 9e-8.

  The decoder's Snake activations are most of its elementwise work, and XLA's CPU sine costs about
  four times this: sin^2 has period pi, so z is reduced to r in [-pi/2, pi/2] and sin(r) is a
  polynomial, one fused vectorisable loop. Below 2**13 (the decoder's usual range) the reduction is
  Cody-Waite's with a two-part pi, which loses accuracy above about 1e5 (and gave inf above 1e10);
  above, an exact reduction (Payne-Hanek) that reads z's exponent and mantissa as integers. A
  reduction over |z| picks which loop runs (`map_sin_squared`). float64: jnp.sin."""
  return map_sin_squared(z)


class Snake(nn.Module):
  """x + 1 / (beta + 1e-9) * sin(alpha * x)^2 with per-channel log-scale alpha, beta; float32."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    dtype = wide(x.dtype)
    alpha = jnp.exp(self.param("alpha", nn.initializers.zeros, (channels,)).astype(dtype))
    beta = jnp.exp(self.param("beta", nn.initializers.zeros, (channels,)).astype(dtype))
    x32 = x.astype(dtype)
    inv_beta = jnp.reciprocal(beta + 1e-9)
    return map_sin_squared(alpha * x32, lambda s: x32 + inv_beta * s).astype(x.dtype)


class ResidualUnit(nn.Module):
  """Snake -> dilated conv k7 -> Snake -> conv k1, plus the input."""

  channels: int
  dilation: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = Conv1d(self.channels, 7, dilation=self.dilation, padding=3 * self.dilation, dtype=self.dtype,
               name="conv1")(Snake(name="snake1")(x))
    y = Conv1d(self.channels, 1, dtype=self.dtype, name="conv2")(Snake(name="snake2")(y))
    return x + y


class EncoderBlock(nn.Module):
  out_channels: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    channels = x.shape[-1]
    for i, dilation in enumerate((1, 3, 9)):
      x = ResidualUnit(channels, dilation, dtype=self.dtype, name=f"res_unit{i + 1}")(x)
    x = Snake(name="snake1")(x)
    return Conv1d(self.out_channels, 2 * self.stride, stride=self.stride, padding=math.ceil(self.stride / 2),
                  dtype=self.dtype, name="conv1")(x)


class DecoderBlock(nn.Module):
  out_channels: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = Snake(name="snake1")(x)
    x = ConvTranspose1d(self.out_channels, 2 * self.stride, self.stride, math.ceil(self.stride / 2),
                        dtype=self.dtype, name="conv_t1")(x)
    for i, dilation in enumerate((1, 3, 9)):
      x = ResidualUnit(self.out_channels, dilation, dtype=self.dtype, name=f"res_unit{i + 1}")(x)
    return x


class OobleckEncoder(nn.Module):
  """(B, T, audio_channels) -> (B, T / hop, 2 * latent_dim)."""

  config: OobleckConfig

  @nn.compact
  def __call__(self, audio: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    mults = (1,) + tuple(cfg.channel_mults)
    x = Conv1d(cfg.encoder_channels, 7, padding=3, dtype=dtype, name="conv1")(audio)
    for i, stride in enumerate(cfg.strides):
      x = EncoderBlock(cfg.encoder_channels * mults[i + 1], stride, dtype=dtype, name=f"block_{i}")(x)
    x = Snake(name="snake1")(x)
    return Conv1d(2 * cfg.latent_dim, 3, padding=1, dtype=dtype, name="conv2")(x)


class OobleckDecoder(nn.Module):
  """(B, frames, latent_dim) -> (B, frames * hop, audio_channels). No final tanh."""

  config: OobleckConfig

  @nn.compact
  def __call__(self, latents: Array) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    mults = (1,) + tuple(cfg.channel_mults)
    n = len(cfg.strides)
    x = Conv1d(cfg.decoder_channels * mults[-1], 7, padding=3, dtype=dtype, name="conv1")(latents)
    for i, stride in enumerate(reversed(cfg.strides)):
      x = DecoderBlock(cfg.decoder_channels * mults[n - i - 1], stride, dtype=dtype, name=f"block_{i}")(x)
    x = Snake(name="snake1")(x)
    return Conv1d(cfg.audio_channels, 7, padding=3, use_bias=False, dtype=dtype, name="conv2")(x)


@flax.struct.dataclass
class LatentDistribution:
  """Diagonal Gaussian over latents, (B, latent_dim, frames) each."""

  mean: Array
  std: Array

  def sample(self, key: Array) -> Array:
    return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)


class OobleckVAE(nn.Module):
  """Encoder and decoder with the API in PyTorch's channels-first layout."""

  config: OobleckConfig

  def setup(self):
    self.encoder = OobleckEncoder(self.config)
    self.decoder = OobleckDecoder(self.config)

  def __call__(self, audio: Array) -> Array:
    """Encode-mean then decode; used to create all parameters at init."""
    return self.decode(self.encode(audio).mean)

  def encode(self, audio: Array) -> LatentDistribution:
    """audio (B, audio_channels, samples) -> posterior over (B, latent_dim, samples / hop)."""
    chex.assert_rank(audio, 3)
    if audio.shape[1] != self.config.audio_channels:
      raise ValueError(f"expected audio with {self.config.audio_channels} channels, got shape {audio.shape}")
    moments = self.encoder(audio.transpose(0, 2, 1))
    moments = moments.astype(wide(moments.dtype)).transpose(0, 2, 1)
    mean, scale = jnp.split(moments, 2, axis=1)
    return LatentDistribution(mean=mean, std=jax.nn.softplus(scale) + 1e-4)

  def decode(self, latents: Array) -> Array:
    """latents (B, latent_dim, frames) -> audio (B, audio_channels, frames * hop), float32."""
    chex.assert_rank(latents, 3)
    if latents.shape[1] != self.config.latent_dim:
      raise ValueError(f"expected latents with {self.config.latent_dim} channels, got shape {latents.shape}")
    audio = self.decoder(latents.transpose(0, 2, 1))
    return audio.astype(wide(audio.dtype)).transpose(0, 2, 1)


# ----------------------------------------------------------------------------- long audio


def decoder_receptive_radius(config: OobleckConfig) -> int:
  """How many latent frames on each side can influence one output sample of the decoder
  (rounded up, plus one for safety). Windows with this much context decode exactly."""
  radius, rate = 3.0, 1.0  # conv1 (k7) at the latent rate; rate = samples per latent frame
  for stride in reversed(config.strides):
    radius += 2.0 / rate  # transposed conv, kernel 2s: two input samples either side
    rate *= stride
    radius += 3 * (1 + 3 + 9) / rate  # three residual units with k7 and dilations 1, 3, 9
  radius += 3.0 / rate  # conv2 (k7)
  return int(math.ceil(radius)) + 1


def encoder_receptive_radius(config: OobleckConfig) -> int:
  """Latent frames on each side that can influence one latent frame of the encoder."""
  radius, rate = 3.0, 1.0  # conv1 (k7) at the audio rate; rate = audio samples per current sample
  for stride in config.strides:
    radius += 3 * (1 + 3 + 9) * rate
    radius += (stride + 1) * rate  # strided conv, kernel 2s
    rate *= stride
  radius += 1 * rate  # conv2 (k3) at the latent rate
  return int(math.ceil(radius / config.hop_length)) + 1


def windows(length: int, chunk: int, overlap: int, start: int = 0, stop: int | None = None) -> list[tuple[int, int, int, int]]:
  """Splits [start, stop) (default: all of [0, length)) into chunks [a, b), each computed from one
  window [w0, w0 + width) of a single width inside [0, length), with `overlap` frames of context on
  each side (or the true sequence edge). Returns (a, b, w0, width) tuples."""
  stop = length if stop is None else stop
  width = min(length, chunk + 2 * overlap)
  out = []
  for a in range(start, stop, chunk):
    b = min(a + chunk, stop)
    w0 = max(0, min(a - overlap, length - width))
    out.append((a, b, w0, width))
  return out
