"""SAME, the transformer autoencoder of Stable Audio 3 (diffusers' AutoencoderSAME), in Flax.

    encode  audio (B, C, T) -> patches (B, T/P, C*P) -> encoder resampling blocks (each: stride S
            down) -> linear to latent_dim -> soft-norm bottleneck -> latents (B, latent_dim, frames)
    decode  latents -> x * running_std -> linear -> decoder resampling blocks (each: S up) ->
            unpatch -> audio (B, C, frames * hop)

hop = patch_size x prod(strides) (4096 in the released models: 256 x 16).

A resampling block (TRB) runs a pre-norm transformer over one flat sequence made of segments:
  encoder  each segment is S input frames + 1 learned token; the token's output is the new frame
  decoder  each segment is 1 input frame + S copies of a learned token; their outputs are the
           S new frames
The attention is a band: token i sees tokens j with |i - j| <= sliding_window * (S + 1) (the
reference builds an (L, L) additive mask; `band_attention` computes the same by blocks, in
O(L x band) time and memory). Rotary positions count over the whole flat sequence, on the first
half of each head's dims. Norms are DynamicTanh (gain * tanh(alpha x) + bias). With
`use_differential_attention`, the output is attn(q1, k1, v) - attn(q2, k2, v) (no lambda), one
q/k norm serving both branches. The feed-forward is a GLU with SiLU gate, or sin(pi x) gate on
the layers the reference marks sinusoidal: layer j of a block of depth D with sinusoidal count k
is sinusoidal iff D - j < k, i.e. the last k - 1 layers (all but the first when k = D; the
reference's docstring says "the trailing k"; we do what its code does).

Lengths: `encode` accepts any number of samples T. Like the reference it right-pads the audio
with zeros to a multiple of patch_size, and then each encoder block right-pads its input frames
with zeros to a multiple of its stride (zeros in that block's input space, before its channel
mapping). The padding is not masked: padded frames take part in attention like real ones, so the
last latent frames (those within the encoder's reach of the end) depend on how much padding there
was. The result has ceil(T / hop) frames; nothing is cropped. `decode` of F frames returns exactly
F x hop samples; trimming to a wanted length is the caller's business.

Inside, activations are (B, time, channels); the API is channels-first like PyTorch. Weight norm
(the channel mapping convs) is folded by the converter; the bottleneck's running std is a
parameter.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import SAMEConfig, to_jnp_dtype
from musickv_jax.models.attention import QKNorm, apply_rotary
from musickv_jax.models.layers import Dense, matmul_precision, wide
from musickv_jax.models.oobleck import windows

Array = jax.Array

ROTARY_BASE = 10000.0  # fixed in the reference (RotaryEmbedding(dim_heads // 2), base 10000)
DECODE_CHUNK_FRAMES = 256  # latent frames per window of `decode_chunked` (23.8 s at 4096x, 44.1 kHz)


# ----------------------------------------------------------------------------- config





def decoder_receptive_radius(config: SAMEConfig) -> int:
  """Latent frames on each side that can influence one output sample of `decode` (an exact bound).

  In a decoder block of depth D at a level with stride S, a token reaches D x band =
  D x sliding_window x (S + 1) tokens each way: its output frames depend on the block's input frames
  within r = D x sliding_window. A block's input frames are the previous block's output frames, S'
  of them per input frame of that block, so r of them lie within ceil(r / S') of its input frames.
  Summed from the last block up to the latents. SAME-S (one level, depth 6, window 1): 6 frames
  (0.56 s at 10.77 Hz); SAME-L (depth 12): 12 frames."""
  radius = 0
  for level in range(config.n_levels):  # the decoder's last block (level 0) first
    if level:
      radius = -(-radius // config.encoder_strides[level])
    radius += config.encoder_transformer_depths[level] * config.sliding_window
  return radius


# ----------------------------------------------------------------------------- band attention


def band_attention(q: Array, k: Array, v: Array, half_width: int, block: int | None = None) -> Array:
  """softmax(q k^T / sqrt(D) + band) v where the band keeps keys j with |i - j| <= half_width.

  q, k, v: (B, L, H, D) -> (B, L, H, D). Computed by blocks of `block` (>= half_width; default
  max(half_width, 1)) queries: a query block attends to its own key block and the two beside it
  (3 x block keys), the out-of-band pairs and the padding past L masked. Time and memory are
  O(L x block), never O(L^2). Logits and softmax in float32 (or wider)."""
  batch, length, heads, head_dim = q.shape
  chex.assert_shape((k, v), (batch, length, heads, head_dim))
  block = max(half_width, 1) if block is None else block
  if block < max(half_width, 1):
    raise ValueError(f"block {block} must be at least the band half-width {half_width}")
  n_blocks = -(-length // block)
  padded = n_blocks * block
  precision = matmul_precision(q.dtype)
  stat = wide(q.dtype)

  def pad(x: Array, before: int, after: int) -> Array:
    return jnp.pad(x, [(0, 0), (before, after), (0, 0), (0, 0)])

  def neighbours(x: Array) -> Array:  # (B, L, H, D) -> (B, N, 3W, H, D): blocks n-1, n, n+1
    blocks = pad(x, block, padded - length + block).reshape(batch, n_blocks + 2, block, heads, head_dim)
    return jnp.concatenate([blocks[:, :-2], blocks[:, 1:-1], blocks[:, 2:]], axis=2)

  q_blocks = pad(q, 0, padded - length).reshape(batch, n_blocks, block, heads, head_dim)  # (B, N, W, H, D)
  k_near, v_near = neighbours(k), neighbours(v)  # (B, N, 3W, H, D)
  logits = jnp.einsum("bnqhd,bnkhd->bnhqk", q_blocks, k_near, precision=precision,
                      preferred_element_type=stat) * (head_dim ** -0.5)  # (B, N, H, W, 3W)

  # key position - query position inside a window: (kk - W) - qq; keys outside [0, L) are padding
  offsets = np.arange(3 * block)[None, :] - block - np.arange(block)[:, None]  # (W, 3W)
  key_pos = (np.arange(n_blocks)[:, None] - 1) * block + np.arange(3 * block)[None, :]  # (N, 3W)
  keep = (np.abs(offsets) <= half_width)[None] & ((key_pos >= 0) & (key_pos < length))[:, None, :]  # (N, W, 3W)
  logits = jnp.where(keep[None, :, None], logits, jnp.finfo(stat).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", probs, v_near, precision=precision)  # (B, N, W, H, D)
  return out.reshape(batch, padded, heads, head_dim)[:, :length]


def rotary_at(positions: Array, rotary_dim: int) -> tuple[Array, Array]:
  """cos, sin (L, 2 * ceil(rotary_dim / 2)) at the given (L,) integer positions, 'rotate-half'
  layout: the arithmetic of models.attention.rotary_tables (and of the reference) at any offset."""
  inv_freq = 1.0 / (ROTARY_BASE ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # (L, r/2)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


# ----------------------------------------------------------------------------- transformer layer


class SAMELayer(nn.Module):
  """One pre-norm transformer layer of a resampling block, scanned over the block's depth.

  carry x (B, L, W); sinusoidal: () bool, this layer's gate (scanned); rope: (cos, sin), each
  (L, rot) (broadcast)."""

  width: int
  head_dim: int
  differential: bool
  ff_mult: int
  half_width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, sinusoidal: Array, rope: tuple[Array, Array]) -> tuple[Array, None]:
    batch, length, width = x.shape
    heads = width // self.head_dim
    parts = 5 if self.differential else 3

    h = QKNorm("dyt", name="norm_attn")(x)
    qkv = Dense(parts * width, use_bias=False, dtype=self.dtype, name="qkv")(h)  # (B, L, parts*W)
    qkv = qkv.reshape(batch, length, parts, heads, self.head_dim)  # chunks [q1 | q2 | k1 | k2 | v] or [q | k | v]
    q_norm, k_norm = QKNorm("dyt", name="q_norm"), QKNorm("dyt", name="k_norm")
    cos, sin = rope
    rotate = lambda t: apply_rotary(t, cos, sin)  # noqa: E731
    if self.differential:
      q = jnp.concatenate([rotate(q_norm(qkv[:, :, 0])), rotate(q_norm(qkv[:, :, 1]))], axis=2)  # (B, L, 2H, d)
      k = jnp.concatenate([rotate(k_norm(qkv[:, :, 2])), rotate(k_norm(qkv[:, :, 3]))], axis=2)
      v = jnp.concatenate([qkv[:, :, 4], qkv[:, :, 4]], axis=2)
      both = band_attention(q, k, v, self.half_width)  # (B, L, 2H, d): the two maps side by side
      out = both[:, :, :heads] - both[:, :, heads:]
    else:
      q, k, v = rotate(q_norm(qkv[:, :, 0])), rotate(k_norm(qkv[:, :, 1])), qkv[:, :, 2]
      out = band_attention(q, k, v, self.half_width)
    x = x + Dense(width, use_bias=False, dtype=self.dtype, name="out")(out.reshape(batch, length, width))

    inner = int(width * self.ff_mult)
    h = QKNorm("dyt", name="norm_ff")(x)
    value, gate = jnp.split(Dense(2 * inner, dtype=self.dtype, name="ff_in")(h), 2, axis=-1)  # (B, L, inner) x2
    gate32 = gate.astype(wide(gate.dtype))
    gate = jnp.where(sinusoidal, jnp.sin(np.pi * gate32), jax.nn.silu(gate32)).astype(value.dtype)
    x = x + Dense(width, dtype=self.dtype, name="ff_out")(value * gate)
    return x, None


# ----------------------------------------------------------------------------- resampling block


class ResamplingBlock(nn.Module):
  """The transformer resampling block (TRB) of one level.

  encoder: (B, T, C_level) -> (B, ceil(T / S), C_level+1)
  decoder: (B, T, C_level+1) -> (B, T * S, C_level)
  frame_offset: index of the first input frame in the whole sequence (0 unless decoding a window
  of a longer sequence): rotary positions are absolute, as in the one-shot pass."""

  config: SAMEConfig
  level: int
  mode: str  # "encoder" | "decoder"

  @nn.compact
  def __call__(self, x: Array, frame_offset: Array | int = 0) -> Array:
    cfg = self.config
    dtype = to_jnp_dtype(cfg.dtype)
    stride, width = cfg.encoder_strides[self.level], cfg.width(self.level)
    c_in, c_out = ((cfg.channels[self.level], width) if self.mode == "encoder"
                   else (width, cfg.channels[self.level]))
    batch, frames, _ = x.shape
    chex.assert_shape(x, (batch, frames, c_in))
    new_token = self.param("new_tokens", nn.initializers.normal(1e-5), (width,))
    seg = stride + 1

    if self.mode == "encoder":
      x = jnp.pad(x, [(0, 0), (0, -frames % stride), (0, 0)])  # zeros before the mapping, like the reference
      if c_in != c_out:
        x = Dense(c_out, dtype=dtype, name="mapping")(x)
      n = x.shape[1] // stride
      tokens = jnp.broadcast_to(new_token.astype(x.dtype), (batch, n, 1, width))
      x = jnp.concatenate([x.reshape(batch, n, stride, width), tokens], axis=2)  # (B, N, S+1, W)
    else:
      n = frames
      tokens = jnp.broadcast_to(new_token.astype(x.dtype), (batch, n, stride, width))
      x = jnp.concatenate([x.reshape(batch, n, 1, width), tokens], axis=2)  # (B, N, 1+S, W)
    x = x.reshape(batch, n * seg, width)  # the flat sequence of segments

    head_dim = cfg.head_dim(self.level)
    positions = jnp.asarray(frame_offset, jnp.int32) * seg + jnp.arange(n * seg, dtype=jnp.int32)
    rope = rotary_at(positions, head_dim // 2)
    sinusoidal = jnp.asarray(cfg.sinusoidal_layers(self.mode, self.level))
    layers = nn.scan(SAMELayer, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast), length=cfg.encoder_transformer_depths[self.level])(
        width, head_dim, cfg.use_differential_attention, cfg.ff_mult, cfg.band(self.level), dtype, name="layers")
    x, _ = layers(x, sinusoidal, rope)

    x = x.reshape(batch, n, seg, width)
    if self.mode == "encoder":
      return x[:, :, -1]  # (B, N, W): each segment's learned token
    x = x[:, :, 1:].reshape(batch, n * stride, width)  # (B, N*S, W)
    if c_in != c_out:
      x = Dense(c_out, dtype=dtype, name="mapping")(x)
    return x


# ----------------------------------------------------------------------------- encoder, decoder, autoencoder


class SAMEEncoder(nn.Module):
  """patches (B, T/P, C*P) -> (B, frames, latent_dim), before the bottleneck."""

  config: SAMEConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    for level in range(cfg.n_levels):
      x = ResamplingBlock(cfg, level, "encoder", name=f"block_{level}")(x)
    return Dense(cfg.latent_dim, dtype=to_jnp_dtype(cfg.dtype), name="proj")(x)


class SAMEDecoder(nn.Module):
  """(B, frames, latent_dim), after the bottleneck -> patches (B, frames * prod(strides), C*P).
  block_j is level n_levels - 1 - j (diffusers' decoder.blocks.j)."""

  config: SAMEConfig

  @nn.compact
  def __call__(self, x: Array, frame_offset: Array | int = 0) -> Array:
    cfg = self.config
    x = Dense(cfg.channels[-1], dtype=to_jnp_dtype(cfg.dtype), name="proj")(x)
    for j, level in enumerate(reversed(range(cfg.n_levels))):
      x = ResamplingBlock(cfg, level, "decoder", name=f"block_{j}")(x, frame_offset)
      frame_offset = frame_offset * cfg.encoder_strides[level]
    return x


class SoftNormBottleneck(nn.Module):
  """encode: (x * scale + bias) / running_std; decode: x * running_std (the bias is not undone,
  as in the reference). On (..., latent_dim), in float32 (or wider)."""

  latent_dim: int

  def setup(self):
    self.scale = self.param("scale", nn.initializers.ones, (self.latent_dim,))
    self.bias = self.param("bias", nn.initializers.zeros, (self.latent_dim,))
    self.running_std = self.param("running_std", nn.initializers.ones, (1,))  # a running statistic, stored

  def encode(self, x: Array) -> Array:
    dtype = wide(x.dtype)
    x = x.astype(dtype) * self.scale.astype(dtype) + self.bias.astype(dtype)
    return x / self.running_std.astype(dtype)

  def decode(self, z: Array) -> Array:
    dtype = wide(z.dtype)
    return z.astype(dtype) * self.running_std.astype(dtype)


class SAME(nn.Module):
  """The SAME autoencoder with the API in PyTorch's channels-first layout.

  encode(audio (B, audio_channels, T)) -> latents (B, latent_dim, ceil(T / hop)), float32:
      AutoencoderSAME.encode(audio).latents (see the module docstring for T not a multiple of hop).
  decode(latents (B, latent_dim, F)) -> audio (B, audio_channels, F * hop), float32:
      AutoencoderSAME.decode(latents).sample."""

  config: SAMEConfig

  def setup(self):
    cfg = self.config
    cfg.validate()
    self.encoder = SAMEEncoder(cfg)
    self.decoder = SAMEDecoder(cfg)
    self.bottleneck = SoftNormBottleneck(cfg.latent_dim)

  def __call__(self, audio: Array) -> Array:
    """Encode then decode; creates every parameter at init."""
    return self.decode(self.encode(audio))

  def encode(self, audio: Array) -> Array:
    cfg = self.config
    chex.assert_rank(audio, 3)
    batch, channels, samples = audio.shape
    if channels != cfg.audio_channels:
      raise ValueError(f"expected audio with {cfg.audio_channels} channels, got shape {audio.shape}")
    p = cfg.patch_size
    audio = jnp.pad(audio, [(0, 0), (0, 0), (0, -samples % p)])
    n = audio.shape[-1] // p
    # (B, C, n, P) -> (B, n, C, P) -> (B, n, C*P): patch channel c * P + p, the reference's order
    patches = audio.reshape(batch, channels, n, p).transpose(0, 2, 1, 3).reshape(batch, n, channels * p)
    x = self.encoder(patches.astype(to_jnp_dtype(cfg.dtype)))  # (B, F, latent)
    latents = self.bottleneck.encode(x).transpose(0, 2, 1)  # (B, latent, F)
    chex.assert_shape(latents, (batch, cfg.latent_dim, -(-samples // cfg.hop_length)))
    return latents

  def decode(self, latents: Array, frame_offset: Array | int = 0) -> Array:
    """frame_offset: where these frames start in a longer sequence (used by `decode_chunked`)."""
    cfg = self.config
    chex.assert_rank(latents, 3)
    batch, dim, frames = latents.shape
    if dim != cfg.latent_dim:
      raise ValueError(f"expected latents with {cfg.latent_dim} channels, got shape {latents.shape}")
    x = self.bottleneck.decode(latents.transpose(0, 2, 1))
    x = self.decoder(x.astype(to_jnp_dtype(cfg.dtype)), frame_offset)  # (B, n, C*P)
    n, c, p = x.shape[1], cfg.audio_channels, cfg.patch_size
    audio = x.reshape(batch, n, c, p).transpose(0, 2, 1, 3).reshape(batch, c, n * p)  # (B, C, n*P)
    chex.assert_shape(audio, (batch, c, frames * cfg.hop_length))
    return audio.astype(wide(audio.dtype))


def abstract_params(config: SAMEConfig, frames: int = 1) -> dict:
  """The ShapeDtypeStruct tree of SAME's parameters (nothing is computed)."""
  audio = jax.ShapeDtypeStruct((1, config.audio_channels, frames * config.hop_length), jnp.float32)
  return jax.eval_shape(lambda a: SAME(config).init(jax.random.key(0), a), audio)["params"]


# ----------------------------------------------------------------------------- jitted entry points


@functools.partial(jax.jit, static_argnames=("config",))
def encode(params, audio: Array, *, config: SAMEConfig) -> Array:
  model = SAME(config)
  return model.apply({"params": params}, audio, method=model.encode)


@functools.partial(jax.jit, static_argnames=("config",))
def decode(params, latents: Array, frame_offset: Array | int = 0, *, config: SAMEConfig) -> Array:
  model = SAME(config)
  return model.apply({"params": params}, latents, frame_offset, method=model.decode)


def decode_chunked(params, latents, config: SAMEConfig, chunk_frames: int = DECODE_CHUNK_FRAMES,
                   overlap: int | None = None) -> np.ndarray:
  """latents (B, latent_dim, F) -> audio (B, audio_channels, F * hop) float32 NumPy, decoded over
  windows of chunk_frames + 2 x overlap frames (one compiled program for all of them). Each window
  decodes at its absolute positions, and overlap defaults to the decoder's receptive radius, so the
  stitched audio equals the one-shot decode up to float32 rounding (the attention blocks fall at
  other places in a window). Memory follows the window, not F."""
  latents = jnp.asarray(latents, jnp.float32)
  frames = latents.shape[-1]
  radius = decoder_receptive_radius(config)
  overlap = radius if overlap is None else overlap
  if overlap < radius:
    raise ValueError(f"overlap {overlap} is less than the decoder's receptive radius {radius} frames")
  hop = config.hop_length
  out = np.empty((latents.shape[0], config.audio_channels, frames * hop), np.float32)
  for a, b, w0, width in windows(frames, chunk_frames, overlap):
    audio = decode(params, latents[..., w0:w0 + width], jnp.int32(w0), config=config)
    out[..., a * hop:b * hop] = np.asarray(audio)[..., (a - w0) * hop:(b - w0) * hop]
  return out
