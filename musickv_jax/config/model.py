"""ModelConfig: a model's components together, which family they belong to, their JSON form."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from musickv_jax import resources
from musickv_jax.config.common import DiffusionConfig, to_jnp_dtype
from musickv_jax.config.sa3 import SA3DiTConfig, SA3DurationConfig, SAMEConfig, T5GemmaConfig
from musickv_jax.config.sao import ConditionerConfig, DiTConfig, OobleckConfig, T5Config
from musickv_jax.errors import ConfigError

FAMILIES = ("sao", "sa3")
# each family's component classes: dit, vae, t5 (the text encoder), conditioner
_PARTS = {"sao": (DiTConfig, OobleckConfig, T5Config, ConditionerConfig),
          "sa3": (SA3DiTConfig, SAMEConfig, T5GemmaConfig, SA3DurationConfig)}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to build a model of one family (config/__init__.py): the DiT, the autoencoder
  (vae), the text encoder (t5: T5 for Stable Audio Open, T5Gemma for Stable Audio 3), the
  conditioners (numbers for Stable Audio Open, the duration embedder for Stable Audio 3) and how it
  is sampled."""

  dit: DiTConfig | SA3DiTConfig = DiTConfig()
  vae: OobleckConfig | SAMEConfig = OobleckConfig()
  t5: T5Config | T5GemmaConfig = T5Config()
  conditioner: ConditionerConfig | SA3DurationConfig = ConditionerConfig()
  diffusion: DiffusionConfig = DiffusionConfig()
  name: str = "sao-1.0"
  family: str = "sao"

  def __post_init__(self):
    self.validate()

  @property
  def is_sa3(self) -> bool:
    return self.family == "sa3"

  @property
  def variable_length(self) -> bool:
    """Whether the latent's length follows the requested duration (Stable Audio 3, trained on
    variable lengths) instead of the model's whole window, trimmed (Stable Audio Open)."""
    return self.is_sa3

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
    Audio Open 1.0, 65 for Small, 257 for Stable Audio 3)."""
    return self.t5.max_length + len(self.conditioner.numbers)

  def frames_for_samples(self, n_samples: int) -> int:
    """Latent frames that hold n_samples of audio (the VAE's hop, rounded up)."""
    return -(-int(n_samples) // self.vae.hop_length)

  def seconds_of_frames(self, frames: int) -> float:
    return frames * self.vae.hop_length / self.vae.sample_rate

  def validate(self) -> None:
    if self.family not in FAMILIES:
      raise ConfigError(f"family {self.family!r} is not supported; use one of {FAMILIES}")
    expected = _PARTS[self.family]
    for part, cls in zip(("dit", "vae", "t5", "conditioner"), expected):
      if not isinstance(getattr(self, part), cls):
        raise ConfigError(f"a {self.family} model's {part} config must be a {cls.__name__}, got "
                          f"{type(getattr(self, part)).__name__}")
    self.dit.validate()
    self.vae.validate()
    self.t5.validate()
    self.conditioner.validate()
    self.diffusion.validate()
    for name_a, a, name_b, b in self._couplings():
      if a != b:
        raise ConfigError(f"inconsistent model config: {name_a}={a} but {name_b}={b}; they must be equal")

  def _couplings(self) -> list[tuple[str, int, str, int]]:
    if self.is_sa3:
      return [("vae.latent_dim", self.vae.latent_dim, "dit.io_channels", self.dit.io_channels),
              ("t5.hidden_size", self.t5.hidden_size, "dit.cond_token_dim", self.dit.cond_token_dim),
              ("conditioner.output_dim", self.conditioner.output_dim, "dit.global_cond_dim", self.dit.global_cond_dim),
              ("conditioner.output_dim", self.conditioner.output_dim, "dit.cond_token_dim", self.dit.cond_token_dim)]
    return [("vae.latent_dim", self.vae.latent_dim, "dit.io_channels", self.dit.io_channels),
            ("t5.d_model", self.t5.d_model, "conditioner.text_dim", self.conditioner.text_dim),
            ("conditioner.cond_dim", self.conditioner.cond_dim, "dit.cond_input_dim", self.dit.cond_input_dim),
            ("len(conditioner.global_numbers) * conditioner.cond_dim", self.conditioner.global_dim,
             "dit.global_cond_dim", self.dit.global_cond_dim)]

  def replace(self, **components) -> "ModelConfig":
    return dataclasses.replace(self, **components)

  def with_attention(self, attention: str) -> "ModelConfig":
    """The same model computing attention with another implementation (same function)."""
    return self.replace(dit=dataclasses.replace(self.dit, attention=attention))

  def with_dtype(self, dtype: str) -> "ModelConfig":
    """The same model computing its matmuls in `dtype` (the text encoder keeps its own setting)."""
    to_jnp_dtype(dtype)
    return self.replace(dit=dataclasses.replace(self.dit, dtype=dtype),
                        vae=dataclasses.replace(self.vae, dtype=dtype))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
    """A config from its JSON form; a part left out takes its defaults (Stable Audio Open 1.0's, or
    Stable Audio 3 Medium's for "family": "sa3")."""
    data = dict(data)
    family = data.pop("family", "sao")
    if family not in FAMILIES:
      raise ConfigError(f"family {family!r} is not supported; use one of {FAMILIES}")
    parts = {}
    for field_name, part_cls in zip(("dit", "vae", "t5", "conditioner"), _PARTS[family]):
      parts[field_name] = _part_from_dict(part_cls, data.pop(field_name, {}), field_name)
    parts["diffusion"] = _part_from_dict(DiffusionConfig, data.pop("diffusion", {}), "diffusion")
    unknown = sorted(set(data) - {"name"})
    if unknown:
      raise ConfigError(f"unknown top-level keys in the model config: {unknown}")
    return cls(name=data.get("name", "custom"), family=family, **parts)

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
