"""Typed, frozen model configs for the Stable Audio Open family and their JSON form.

One dataclass per component; `ModelConfig` bundles them and checks the couplings between
components (latent width, conditioning widths). The family's members differ in options, not in
code: Stable Audio Open 1.0 (v objective, seconds_start and seconds_total, plain attention) and
Stable Audio Open Small (rectified flow, seconds_total only, LayerNorm on queries and keys,
projected conditioning tokens) are two configs. The converter reads a checkpoint's own config into
these (musickv_jax/convert/sources.py); named variants live as JSON in `configs/` (`sao-1.0`,
`sao-small`, `tiny`) and are loaded with `named_config`.
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
QK_NORMS = ("none", "ln", "rms", "l2", "dyt")  # how queries and keys are normalised per head (models/attention.py)
OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")  # what the DiT predicts and how it is sampled (DiffusionConfig)
SHIFTS = ("logsnr", "flux", "full", "none")  # rectified flow's sampling time warps (sampling/rf_schedules.py)
NUMBERS = ("seconds_start", "seconds_total")  # the number conditioners the family has

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


@dataclasses.dataclass(frozen=True)
class DistributionShift:
  """How rectified flow warps its uniform grid of times into the sampling schedule
  (stable-audio-tools' sampling_distribution_shift_options; sampling/rf_schedules.py has the maths).
  Each kind reads its own fields: logsnr (rate, anchor_length, anchor_logsnr, logsnr_end), flux
  (min_length, max_length, alpha_min, alpha_max), full (base_shift, max_shift, min_length,
  max_length, use_sine), none."""

  kind: str = "logsnr"
  rate: float = 0.0  # 0: the same schedule at every length (stable-audio-tools' model default)
  anchor_length: int = 2000
  anchor_logsnr: float = -6.2
  logsnr_end: float = 2.0
  min_length: int = 256
  max_length: int = 4096
  alpha_min: float = 1.0
  alpha_max: float = 1.0
  base_shift: float = 0.5
  max_shift: float = 1.15
  use_sine: bool = False

  def validate(self) -> None:
    if self.kind not in SHIFTS:
      raise ConfigError(f"diffusion.shift.kind {self.kind!r} is not supported; use one of {SHIFTS}")


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
  """What a user who sets nothing gets: the sampler, steps and guidance the model was made for."""

  sampler: str
  steps: int
  guidance_scale: float


# the samplers of each objective, the first the default, and the defaults' steps and guidance (stable-audio-tools'
# own: v 100 steps at 7 (Stable Audio Open 1.0), rf_denoiser ping-pong 8 steps at 1 (the ARC post-trained Small),
# rectified_flow 50 steps at 7 (its base model))
_SAMPLERS = {"v": ("dpmpp-2m", "dpmpp-2m-sde", "dpmpp-1"), "rectified_flow": ("euler", "pingpong"),
             "rf_denoiser": ("pingpong", "euler")}
_DEFAULTS = {"v": (100, 7.0), "rectified_flow": (50, 7.0), "rf_denoiser": (8, 1.0)}


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  """What the DiT predicts and how it is sampled.

  v               EDM noise levels sigma, v-prediction (Stable Audio Open 1.0)
  rectified_flow  x_t = (1 - t) x0 + t noise, the DiT predicts v = noise - x0 at time t in [0, 1]
  rf_denoiser     the same network trained further to sample in a few steps (ping-pong)"""

  objective: str = "v"
  shift: DistributionShift = DistributionShift()

  @property
  def is_rectified_flow(self) -> bool:
    return self.objective != "v"

  @property
  def samplers(self) -> tuple[str, ...]:
    return _SAMPLERS[self.objective]

  @property
  def defaults(self) -> SamplingDefaults:
    steps, guidance = _DEFAULTS[self.objective]
    return SamplingDefaults(self.samplers[0], steps, guidance)

  @property
  def deterministic_sampler(self) -> str:
    """The sampler whose steps an inversion runs backwards (a recording's edit uses it by default)."""
    return "euler" if self.is_rectified_flow else "dpmpp-2m"

  def validate(self) -> None:
    if self.objective not in OBJECTIVES:
      raise ConfigError(f"diffusion.objective {self.objective!r} is not supported; use one of {OBJECTIVES}")
    self.shift.validate()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to build Stable Audio Open: DiT, VAE, T5 and conditioners."""

  dit: DiTConfig = DiTConfig()
  vae: OobleckConfig = OobleckConfig()
  t5: T5Config = T5Config()
  conditioner: ConditionerConfig = ConditionerConfig()
  diffusion: DiffusionConfig = DiffusionConfig()
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

  @property
  def cross_tokens(self) -> int:
    """The DiT's cross-attention tokens: the text's and one per number conditioner (130 for Stable
    Audio Open 1.0, 65 for Small)."""
    return self.t5.max_length + len(self.conditioner.numbers)

  def frames_for_samples(self, n_samples: int) -> int:
    """Latent frames that hold n_samples of audio (the VAE's hop, rounded up)."""
    return -(-int(n_samples) // self.vae.hop_length)

  def seconds_of_frames(self, frames: int) -> float:
    return frames * self.vae.hop_length / self.vae.sample_rate

  def validate(self) -> None:
    self.dit.validate()
    self.vae.validate()
    self.t5.validate()
    self.conditioner.validate()
    self.diffusion.validate()
    couplings = [
        ("vae.latent_dim", self.vae.latent_dim, "dit.io_channels", self.dit.io_channels),
        ("t5.d_model", self.t5.d_model, "conditioner.text_dim", self.conditioner.text_dim),
        ("conditioner.cond_dim", self.conditioner.cond_dim, "dit.cond_input_dim", self.dit.cond_input_dim),
        ("len(conditioner.global_numbers) * conditioner.cond_dim", self.conditioner.global_dim,
         "dit.global_cond_dim", self.dit.global_cond_dim),
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
    """A config from its JSON form; a part left out takes its defaults (Stable Audio Open 1.0's)."""
    data = dict(data)
    parts = {}
    for field_name, part_cls in (("dit", DiTConfig), ("vae", OobleckConfig), ("t5", T5Config),
                                 ("conditioner", ConditionerConfig), ("diffusion", DiffusionConfig)):
      parts[field_name] = _part_from_dict(part_cls, data.pop(field_name, {}), field_name)
    unknown = sorted(set(data) - {"name"})
    if unknown:
      raise ConfigError(f"unknown top-level keys in the model config: {unknown}")
    return cls(name=data.get("name", "custom"), **parts)

  @classmethod
  def from_json_file(cls, path: str | Path) -> "ModelConfig":
    with open(path) as f:
      return cls.from_dict(json.load(f))


def _part_from_dict(part_cls, raw, where: str):
  """A frozen dataclass from its JSON dict: lists become tuples, nested dataclasses are built too."""
  if not isinstance(raw, dict):
    raise ConfigError(f"the '{where}' config must be a JSON object, got {raw!r}")
  raw = dict(raw)
  known = {f.name: f for f in dataclasses.fields(part_cls)}
  unknown = sorted(set(raw) - set(known))
  if unknown:
    raise ConfigError(f"unknown keys in the '{where}' config: {unknown}")
  for key, value in raw.items():
    default = known[key].default
    if dataclasses.is_dataclass(default):
      raw[key] = _part_from_dict(type(default), value, f"{where}.{key}")
    elif isinstance(value, list):
      raw[key] = tuple(value)
  return part_cls(**raw)


def available_configs() -> list[str]:
  return sorted(p.stem for p in resources.configs_dir().glob("*.json"))


def named_config(name: str) -> ModelConfig:
  """Loads `configs/<name>.json` (e.g. 'sao-1.0', 'tiny')."""
  path = resources.configs_dir() / f"{name}.json"
  if not path.is_file():
    raise ConfigError(f"no model config named {name!r}; available: {available_configs()}")
  return ModelConfig.from_json_file(path)
