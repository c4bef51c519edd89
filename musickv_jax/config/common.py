"""What every family shares: dtypes, attention implementations, and how the DiT is sampled."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from musickv_jax.errors import ConfigError, SettingsError

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "blocked", "cudnn", "splash")  # see models/attention_kernels.py
QK_NORMS = ("none", "ln", "rms", "l2", "dyt")  # how queries and keys are normalised per head (models/attention.py)
OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")  # what the DiT predicts and how it is sampled (DiffusionConfig)
SHIFTS = ("logsnr", "flux", "full", "none", "sa3")  # rectified flow's sampling time warps (sampling/rf_schedules.py)
# float64 is for research only (finite-difference gradient checks; needs jax_enable_x64).
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def to_jnp_dtype(name: str):
  """Maps a dtype name used in configs and flags to a jnp dtype."""
  try:
    return _DTYPES[name]
  except KeyError:
    raise SettingsError(f"{{field}} must be one of {sorted(_DTYPES)}, got {name!r}", field="dtype") from None


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


