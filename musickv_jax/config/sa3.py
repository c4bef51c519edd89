"""Stable Audio 3's components (diffusers' StableAudio3DiTModel, AutoencoderSAME,
StableAudio3DurationEmbedder, and transformers' T5Gemma encoder), under diffusers' and
transformers' own option names, each with the properties the pipeline reads of every family
(dit.sample_size, vae.hop_length, conditioner.seconds_max, ...)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from musickv_jax.config.common import ATTENTION_IMPLEMENTATIONS, to_jnp_dtype
from musickv_jax.errors import ConfigError, SettingsError

SLIDING, FULL = "sliding_attention", "full_attention"
LAYER_TYPES = (SLIDING, FULL)
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")  # transformers' names: the tanh approximation, the exact erf GELU
FULL_WINDOW = 2 ** 30  # the window of a full-attention layer: wider than any prompt


def alternating_layer_types(layers: int) -> tuple[str, ...]:
  """transformers' default layer_types: sliding, full, sliding, full, ..."""
  return tuple(SLIDING if i % 2 == 0 else FULL for i in range(layers))





@dataclasses.dataclass(frozen=True)
class SA3DiTConfig:
  """diffusers' StableAudio3DiTModel (its config.json names in comments where they differ)."""

  io_channels: int = 256  # latent channels in and out
  patch_size: int = 1  # latent frames per transformer token
  embed_dim: int = 1536
  depth: int = 24
  num_heads: int = 24
  cond_token_dim: int = 768  # width of the raw cross-attention tokens (text + duration)
  global_cond_dim: int = 768  # width of the duration embedding
  local_add_cond_dim: int = 257  # inpainting conditioning channels (mask + masked latents)
  time_features_dim: int = 256  # timestep_features_dim: expo Fourier features of sigma (cos | sin)
  ff_mult: float = 4.0
  num_memory_tokens: int = 64
  differential: bool = True  # use_differential_attention
  rotary_base: float = 10000.0
  norm_eps: float = 1e-6  # every RMSNorm (residual stream and q/k)
  # the largest latent length accepted: SA3 trains on variable lengths and has no fixed window; the
  # default is the duration embedder's 384 s at 44.1 kHz / 4096 (ceil(384 * 44100 / 4096))
  sample_size: int = 4135
  dtype: str = "float32"  # matmul dtype; norms, softmax, features and modulation gates stay float32
  attention: str = "auto"  # how attention is computed (models/attention_kernels.py): a speed setting

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def rotary_dim(self) -> int:
    """Channels of each head that get rotary embedding: diffusers builds its rotary table for
    head_dim // 2."""
    return self.head_dim // 2

  @property
  def cond_input_dim(self) -> int:
    """Width of the cross-attention tokens coming in (the name every family's DiT config has)."""
    return self.cond_token_dim

  @property
  def qk_norm(self) -> str:
    return "rms"

  @property
  def key_dim(self) -> int:
    """Width of a head's keys as the hook sees them: k1 | k2 with differential attention."""
    return 2 * self.head_dim if self.differential else self.head_dim

  @property
  def ff_inner_dim(self) -> int:
    return int(self.embed_dim * self.ff_mult)

  def validate(self) -> None:
    if self.embed_dim % self.num_heads:
      raise ConfigError(f"sa3_dit.embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
    if self.head_dim % 4:
      raise ConfigError(f"sa3_dit head_dim {self.head_dim} must be a multiple of 4 (rotary on an even half)")
    if self.time_features_dim % 2 or self.time_features_dim < 2:
      raise ConfigError(f"sa3_dit.time_features_dim {self.time_features_dim} must be even and at least 2")
    for name in ("io_channels", "patch_size", "depth", "cond_token_dim", "global_cond_dim", "local_add_cond_dim",
                 "sample_size"):
      if getattr(self, name) < 1:
        raise ConfigError(f"sa3_dit.{name} must be at least 1, got {getattr(self, name)}")
    if self.num_memory_tokens < 0:
      raise ConfigError(f"sa3_dit.num_memory_tokens must be at least 0, got {self.num_memory_tokens}")
    if self.ff_inner_dim < 1:
      raise ConfigError(f"sa3_dit.ff_mult {self.ff_mult} gives no feed-forward width")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise SettingsError(f"{{field}} must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}",
                          field="attention")
    to_jnp_dtype(self.dtype)


@dataclasses.dataclass(frozen=True)
class SA3DurationConfig:
  """diffusers' StableAudio3DurationEmbedder (stable-audio-tools' NumberConditioner, expo features)."""

  output_dim: int = 768  # = the DiT's global_cond_dim (and its cond_token_dim: it is also a context token)
  fourier_dim: int = 256
  min_val: float = 0.0
  max_val: float = 384.0  # seconds; larger values are clamped
  min_freq: float = 0.5
  max_freq: float = 10000.0
  dtype: str = "float32"  # matmul dtype; the features stay float32

  # what the pipeline reads of every family's conditioner: the seconds it conditions on
  numbers = ("seconds_total",)  # one token after the text (the duration), and the global vector
  global_numbers = ("seconds_total",)

  @property
  def seconds_min(self) -> float:
    return self.min_val

  @property
  def seconds_max(self) -> float:
    return self.max_val

  def validate(self) -> None:
    if self.fourier_dim % 2 or self.fourier_dim < 2:
      raise ConfigError(f"duration.fourier_dim {self.fourier_dim} must be even and at least 2")
    if not self.max_val > self.min_val:
      raise ConfigError(f"duration.max_val {self.max_val} must be larger than min_val {self.min_val}")
    if not 0 < self.min_freq <= self.max_freq:
      raise ConfigError(f"duration frequencies must satisfy 0 < min_freq <= max_freq, got {self.min_freq}, "
                        f"{self.max_freq}")
    to_jnp_dtype(self.dtype)


@dataclasses.dataclass(frozen=True)
class SAMEConfig:
  """Every option of diffusers' AutoencoderSAME, under the same names (so a checkpoint's
  config.json reads straight into it: `from_diffusers`), plus the matmul dtype.
  Defaults are SAME-S; SAME-L is encoder_channels=256, encoder_transformer_depths=(12,)."""

  audio_channels: int = 2
  patch_size: int = 256
  encoder_channels: int = 128
  encoder_c_mults: tuple[int, ...] = (6,)
  encoder_strides: tuple[int, ...] = (16,)
  encoder_transformer_depths: tuple[int, ...] = (6,)
  latent_dim: int = 256
  use_differential_attention: bool = True
  dim_heads: int = 64
  ff_mult: int = 3
  sliding_window: int = 1  # band half-width in segments: sliding_window * (stride + 1) tokens
  encoder_sinusoidal_blocks: tuple[int, ...] = (0,)  # per level, or one value for all levels
  decoder_sinusoidal_blocks: tuple[int, ...] = (0,)
  sampling_rate: int = 44100
  dtype: str = "float32"  # matmul dtype; norms, softmax, rotary and the bottleneck stay float32

  def __post_init__(self):  # lists (as in config.json) become tuples: the config is a static, hashable jit argument
    for f in dataclasses.fields(self):
      if isinstance(getattr(self, f.name), list):
        object.__setattr__(self, f.name, tuple(getattr(self, f.name)))

  @property
  def hop_length(self) -> int:
    """Audio samples per latent frame: patch_size x prod(strides)."""
    return self.patch_size * math.prod(self.encoder_strides)

  @property
  def sample_rate(self) -> int:
    return self.sampling_rate

  @property
  def n_levels(self) -> int:
    return len(self.encoder_strides)

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels between levels: [audio_channels * patch_size, encoder_channels * c_mult, ...]."""
    return (self.audio_channels * self.patch_size,) + tuple(self.encoder_channels * m for m in self.encoder_c_mults)

  def width(self, level: int) -> int:
    """The transformer width of a level (the same in the encoder and the decoder)."""
    return self.channels[level + 1]

  def head_dim(self, level: int) -> int:
    return min(self.dim_heads, self.width(level))

  def band(self, level: int) -> int:
    """Attention half-width of a level in tokens of its flat sequence."""
    return self.sliding_window * (self.encoder_strides[level] + 1)

  def sinusoidal_layers(self, side: str, level: int) -> tuple[bool, ...]:
    """Which layers of a level's block gate with sin(pi x): the reference's `(depth - j) < k`."""
    counts = self.encoder_sinusoidal_blocks if side == "encoder" else self.decoder_sinusoidal_blocks
    k = counts[0] if len(counts) == 1 else counts[level]
    depth = self.encoder_transformer_depths[level]
    return tuple((depth - j) < k for j in range(depth))

  def validate(self) -> None:
    n = self.n_levels
    if n < 1:
      raise ConfigError("same.encoder_strides must have at least one level")
    for name in ("encoder_c_mults", "encoder_transformer_depths"):
      if len(getattr(self, name)) != n:
        raise ConfigError(f"same.{name} {getattr(self, name)} must have one entry per level "
                          f"(encoder_strides {self.encoder_strides})")
    for name in ("encoder_sinusoidal_blocks", "decoder_sinusoidal_blocks"):
      if len(getattr(self, name)) not in (1, n):
        raise ConfigError(f"same.{name} {getattr(self, name)} must have length 1 or {n}")
    if min((self.audio_channels, self.patch_size, self.encoder_channels, self.latent_dim, self.dim_heads,
            *self.encoder_c_mults, *self.encoder_strides, *self.encoder_transformer_depths)) < 1:
      raise ConfigError("same: channels, patch size, strides, depths, multipliers and dim_heads must be >= 1")
    if self.sliding_window < 0:
      raise ConfigError(f"same.sliding_window {self.sliding_window} must be >= 0")
    for level in range(n):
      width, head = self.width(level), self.head_dim(level)
      if width % head:
        raise ConfigError(f"same level {level}: width {width} is not a multiple of its head dim {head}")
      if head // 2 < 1:
        raise ConfigError(f"same level {level}: head dim {head} leaves no rotary channels")
      if int(width * self.ff_mult) < 1:
        raise ConfigError(f"same.ff_mult {self.ff_mult} leaves no feed-forward channels")
    to_jnp_dtype(self.dtype)

  @classmethod
  def from_diffusers(cls, config: Mapping[str, Any], **overrides) -> "SAMEConfig":
    """From AutoencoderSAME's config.json (keys starting with '_' ignored; ints stored as floats
    and lists accepted). An unknown key is an error: another version of the model."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in config.items():
      if key.startswith("_"):
        continue
      if key not in fields or key == "dtype":
        raise ConfigError(f"AutoencoderSAME config key {key!r} is not known to this port")
      if isinstance(value, (list, tuple)):
        value = tuple(int(v) for v in value)
      elif isinstance(value, bool) or key == "use_differential_attention":
        value = bool(value)
      elif isinstance(value, float) and value.is_integer():
        value = int(value)
      values[key] = value
    cfg = cls(**{**values, **overrides})
    cfg.validate()
    return cfg


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