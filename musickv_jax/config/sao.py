"""Stable Audio Open's components: the DiT of stable-audio-tools, the Oobleck VAE, the T5 encoder and
the number conditioners. Stable Audio Open 1.0 (v objective, seconds_start and seconds_total, plain
attention) and Stable Audio Open Small (rectified flow, seconds_total only, LayerNorm on queries and
keys, projected conditioning tokens) are two configs of these."""

from __future__ import annotations

import dataclasses
import math

from musickv_jax.config.common import ATTENTION_IMPLEMENTATIONS, QK_NORMS
from musickv_jax.errors import ConfigError, SettingsError

NUMBERS = ("seconds_start", "seconds_total")  # the number conditioners the family has


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  """The Stable Audio diffusion transformer (continuous transformer, prepend global token)."""

  io_channels: int = 64  # latent channels in and out
  embed_dim: int = 1536
  depth: int = 24
  num_heads: int = 24
  cross_kv_heads: int = 12  # GQA heads of the cross-attention keys/values
  cond_token_dim: int = 768  # width of the projected cross-attention tokens
  cond_input_dim: int = 768  # width of the cross-attention tokens coming in
  global_cond_dim: int = 1536  # width of the global (seconds) vector coming in
  time_features_dim: int = 256  # Fourier features of the timestep (cos | sin)
  ff_mult: int = 4
  rotary_dim: int = 32  # channels of each head that get rotary embedding
  rotary_base: float = 10000.0
  norm_eps: float = 1e-5
  sample_size: int = 1024  # latent frames of the model's full window
  qk_norm: str = "none"  # normalisation of each head's queries and keys, self- and cross-attention (QK_NORMS)
  qk_norm_eps: float = 1e-6
  dtype: str = "float32"  # matmul dtype; norms, softmax and time features stay float32
  attention: str = "auto"  # how attention is computed (models/attention_kernels.py): a speed setting

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def ff_inner_dim(self) -> int:
    return self.embed_dim * self.ff_mult

  def validate(self) -> None:
    if self.embed_dim % self.num_heads:
      raise ConfigError(f"dit.embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
    if self.num_heads % self.cross_kv_heads:
      raise ConfigError(f"dit.num_heads {self.num_heads} is not a multiple of cross_kv_heads {self.cross_kv_heads}")
    if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
      raise ConfigError(f"dit.rotary_dim {self.rotary_dim} must be even and in (0, head_dim={self.head_dim}]")
    if self.time_features_dim % 2:
      raise ConfigError(f"dit.time_features_dim {self.time_features_dim} must be even")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise SettingsError(f"{{field}} must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}",
                          field="attention")
    if self.qk_norm not in QK_NORMS:
      raise ConfigError(f"dit.qk_norm {self.qk_norm!r} is not supported; use one of {QK_NORMS}")


@dataclasses.dataclass(frozen=True)
class OobleckConfig:
  """The Oobleck VAE: weight-normalised convs with Snake activations."""

  audio_channels: int = 2
  encoder_channels: int = 128
  decoder_channels: int = 128
  latent_dim: int = 64  # the encoder emits 2 * latent_dim (mean | pre-softplus scale)
  strides: tuple[int, ...] = (2, 4, 4, 8, 8)
  channel_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
  sample_rate: int = 44100
  dtype: str = "float32"

  @property
  def hop_length(self) -> int:
    return math.prod(self.strides)

  def validate(self) -> None:
    if len(self.strides) != len(self.channel_mults):
      raise ConfigError(f"vae.strides {self.strides} and channel_mults {self.channel_mults} differ in length")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The T5 encoder (T5-base for Stable Audio Open)."""

  vocab_size: int = 32128
  d_model: int = 768
  d_kv: int = 64
  d_ff: int = 3072
  num_layers: int = 12
  num_heads: int = 12
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"  # "relu" (T5) or "gated-gelu" (T5 v1.1)
  max_length: int = 128  # prompts are padded/truncated to this many tokens
  dtype: str = "float32"  # the original SAO code runs T5 in float16

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    return self.feed_forward_proj.split("-")[-1]

  def validate(self) -> None:
    if self.activation not in ("relu", "gelu", "silu") or self.feed_forward_proj.count("-") > 1:
      raise ConfigError(f"t5.feed_forward_proj {self.feed_forward_proj!r} is not supported "
                        "(use 'relu', 'gated-gelu' or 'gated-silu')")


@dataclasses.dataclass(frozen=True)
class ConditionerConfig:
  """Text projection and the number conditioners (seconds_start and / or seconds_total).

  Cross-attention tokens: [text tokens, one token per entry of `numbers`, in that order]; the
  global vector: the `global_numbers` embeddings side by side."""

  text_dim: int = 768  # T5 width
  cond_dim: int = 768  # width of every conditioning token
  seconds_min: float = 0.0
  seconds_max: float = 512.0
  number_features_dim: int = 256  # learned Fourier features of a number: [x, sin, cos]
  numbers: tuple[str, ...] = NUMBERS  # the number conditioners, in cross-token order
  global_numbers: tuple[str, ...] = NUMBERS  # those that make the global vector, in order

  @property
  def has_text_projection(self) -> bool:
    return self.text_dim != self.cond_dim

  @property
  def global_dim(self) -> int:
    return len(self.global_numbers) * self.cond_dim

  def validate(self) -> None:
    for name in self.numbers:
      if name not in NUMBERS:
        raise ConfigError(f"conditioner.numbers: {name!r} is not a number conditioner this family has ({NUMBERS})")
    if not self.numbers or len(set(self.numbers)) != len(self.numbers):
      raise ConfigError(f"conditioner.numbers {self.numbers} must list each conditioner once")
    if not self.global_numbers or any(name not in self.numbers for name in self.global_numbers):
      raise ConfigError(f"conditioner.global_numbers {self.global_numbers} must be some of {self.numbers}")


