"""Typed, frozen model configs for Stable Audio Open and their JSON form.

One dataclass per component; `ModelConfig` bundles them and checks the couplings
between components (latent width, conditioning widths). Named variants live as
JSON in `configs/` (`sao-1.0`, `tiny`) and are loaded with `named_config`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from musickv_jax import resources
from musickv_jax.errors import ConfigError, SettingsError

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "blocked", "cudnn", "splash")  # see models/attention_kernels.py

# float64 is for research only (finite-difference gradient checks; needs jax_enable_x64).
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def to_jnp_dtype(name: str):
  """Maps a dtype name used in configs and flags to a jnp dtype."""
  try:
    return _DTYPES[name]
  except KeyError:
    raise SettingsError(f"{{field}} must be one of {sorted(_DTYPES)}, got {name!r}", field="dtype") from None


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
  """Text projection and the seconds_start / seconds_total number conditioners."""

  text_dim: int = 768  # T5 width
  cond_dim: int = 768  # width of every conditioning token
  seconds_min: float = 0.0
  seconds_max: float = 512.0
  number_features_dim: int = 256  # learned Fourier features of a number: [x, sin, cos]

  @property
  def has_text_projection(self) -> bool:
    return self.text_dim != self.cond_dim


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to build Stable Audio Open: DiT, VAE, T5 and conditioners."""

  dit: DiTConfig = DiTConfig()
  vae: OobleckConfig = OobleckConfig()
  t5: T5Config = T5Config()
  conditioner: ConditionerConfig = ConditionerConfig()
  name: str = "sao-1.0"

  def __post_init__(self):
    self.validate()

  @property
  def sample_rate(self) -> int:
    return self.vae.sample_rate

  @property
  def max_audio_seconds(self) -> float:
    """Longest audio the model generates: the full latent window."""
    return self.dit.sample_size * self.vae.hop_length / self.vae.sample_rate

  def frames_for_samples(self, n_samples: int) -> int:
    """Latent frames that hold n_samples of audio (the VAE's hop, rounded up)."""
    return -(-int(n_samples) // self.vae.hop_length)

  def seconds_of_frames(self, frames: int) -> float:
    return frames * self.vae.hop_length / self.vae.sample_rate

  def validate(self) -> None:
    self.dit.validate()
    self.vae.validate()
    self.t5.validate()
    couplings = [
        ("vae.latent_dim", self.vae.latent_dim, "dit.io_channels", self.dit.io_channels),
        ("t5.d_model", self.t5.d_model, "conditioner.text_dim", self.conditioner.text_dim),
        ("conditioner.cond_dim", self.conditioner.cond_dim, "dit.cond_input_dim", self.dit.cond_input_dim),
        ("2 * conditioner.cond_dim", 2 * self.conditioner.cond_dim, "dit.global_cond_dim", self.dit.global_cond_dim),
    ]
    for name_a, a, name_b, b in couplings:
      if a != b:
        raise ConfigError(f"inconsistent model config: {name_a}={a} but {name_b}={b}; they must be equal")

  def replace(self, **components) -> "ModelConfig":
    return dataclasses.replace(self, **components)

  def with_attention(self, attention: str) -> "ModelConfig":
    """The same model computing attention with another implementation (same function)."""
    return self.replace(dit=dataclasses.replace(self.dit, attention=attention))

  def with_dtype(self, dtype: str) -> "ModelConfig":
    """The same model computing its matmuls in `dtype` (T5 keeps its own setting)."""
    to_jnp_dtype(dtype)
    return self.replace(dit=dataclasses.replace(self.dit, dtype=dtype),
                        vae=dataclasses.replace(self.vae, dtype=dtype))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
    data = dict(data)
    parts = {}
    for field_name, part_cls in (("dit", DiTConfig), ("vae", OobleckConfig), ("t5", T5Config),
                                 ("conditioner", ConditionerConfig)):
      raw = dict(data.pop(field_name, {}))
      known = {f.name: f for f in dataclasses.fields(part_cls)}
      unknown = sorted(set(raw) - set(known))
      if unknown:
        raise ConfigError(f"unknown keys in the '{field_name}' config: {unknown}")
      for key, value in raw.items():
        if isinstance(value, list):
          raw[key] = tuple(value)
      parts[field_name] = part_cls(**raw)
    unknown = sorted(set(data) - {"name"})
    if unknown:
      raise ConfigError(f"unknown top-level keys in the model config: {unknown}")
    return cls(name=data.get("name", "custom"), **parts)

  @classmethod
  def from_json_file(cls, path: str | Path) -> "ModelConfig":
    with open(path) as f:
      return cls.from_dict(json.load(f))


def available_configs() -> list[str]:
  return sorted(p.stem for p in resources.configs_dir().glob("*.json"))


def named_config(name: str) -> ModelConfig:
  """Loads `configs/<name>.json` (e.g. 'sao-1.0', 'tiny')."""
  path = resources.configs_dir() / f"{name}.json"
  if not path.is_file():
    raise ConfigError(f"no model config named {name!r}; available: {available_configs()}")
  return ModelConfig.from_json_file(path)
