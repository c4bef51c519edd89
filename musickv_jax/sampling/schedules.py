"""Noise-level (sigma) schedules and the v-prediction (EDM, sigma_data = 1) conventions of SAO.

Conventions (x = x0 + sigma * eps):
  model input  x * c_in,  c_in = 1 / sqrt(sigma^2 + 1)
  timestep     t = atan(sigma) * 2 / pi
  denoised     x0 = x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)
Schedules are built on the host in float64 and handed to the sampler as float32 arrays, so a
different schedule is different data, never a different program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_MIN, SIGMA_MAX = 0.3, 500.0

SCHEDULES = ("exponential", "karras")


def exponential_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> np.ndarray:
  """steps sigmas log-uniformly from sigma_max down to sigma_min, then a final 0: (steps + 1,)."""
  _check(steps, sigma_min, sigma_max)
  sigmas = np.exp(np.linspace(np.log(sigma_min), np.log(sigma_max), steps))[::-1]
  return np.append(sigmas, 0.0).astype(np.float32)


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = 7.0) -> np.ndarray:
  """The Karras et al. (2022) schedule, then a final 0: (steps + 1,)."""
  _check(steps, sigma_min, sigma_max)
  ramp = np.linspace(0.0, 1.0, steps)
  inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
  return np.append(sigmas, 0.0).astype(np.float32)


def sigma_schedule(name: str, steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                   rho: float = 7.0) -> np.ndarray:
  if name == "exponential":
    return exponential_sigmas(steps, sigma_min, sigma_max)
  if name == "karras":
    return karras_sigmas(steps, sigma_min, sigma_max, rho)
  raise ValueError(f"unknown sigma schedule {name!r}; use one of {SCHEDULES}")


def _check(steps: int, sigma_min: float, sigma_max: float) -> None:
  if steps < 1:
    raise ValueError(f"the number of steps must be at least 1, got {steps}")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")


def timestep(sigma):
  """The DiT's time input for a noise level."""
  return jnp.arctan(sigma) * (2.0 / np.pi)


def c_in(sigma):
  return jax.lax.rsqrt(jnp.square(sigma) + 1.0)


def init_noise_scale(sigma_max: float, convention: str = "diffusers") -> float:
  """What unit noise is multiplied by to start sampling: diffusers (and MusicKV) use
  sqrt(sigma_max^2 + 1), stable-audio-tools uses sigma_max."""
  if convention == "diffusers":
    return float(np.sqrt(sigma_max ** 2 + 1.0))
  if convention == "stable-audio-tools":
    return float(sigma_max)
  raise ValueError(f"unknown noise convention {convention!r}")
