"""Rectified flow's sampling schedules: the times t_0 = 1 > t_1 > ... > t_N = 0 the sampler visits.

x_t = (1 - t) x0 + t noise; the DiT predicts v = noise - x0 at time t (raw, in its Fourier time
features) and the denoised estimate is x - t v. As stable-audio-tools builds them: a uniform grid
u = 1, (N-1)/N, ..., 0 warped by the model's distribution shift (config.DistributionShift), with
t_0 set to exactly 1. The shift may depend on the latent length L:

  logsnr  lambda_end - u (lambda_end - start), start = anchor_logsnr - rate log2(L / anchor_length),
          t = sigmoid(-lambda), exactly 0 at u = 0 and 1 at u = 1 (rate 0: the same for every L;
          stable-audio-tools' model default, -6.2 .. 2.0)
  flux    alpha = exp(interp(log L, [log min, log max], [log alpha_min, log alpha_max])),
          t = alpha u / (1 + (alpha - 1) u)
  full    mu = -(base + (max_shift - base) (L - min) / (max - min)) with L clamped to [min, max],
          t = 1 - e^mu / (e^mu + 1 / (1 - u) - 1), then sin(t pi / 2) if use_sine
  none    t = u
Built on the host in float64 and handed to the sampler as float32 data, like the sigma schedules.
"""

from __future__ import annotations

import numpy as np

from musickv_jax.config import DistributionShift


def warp(u: np.ndarray, shift: DistributionShift, length: int) -> np.ndarray:
  """The shift applied to grid points u in [0, 1] for a latent of `length` frames."""
  u = np.asarray(u, np.float64)
  length = max(int(length), 1)
  if shift.kind == "none":
    return u.copy()
  if shift.kind == "logsnr":
    start = shift.anchor_logsnr - shift.rate * np.log2(length / shift.anchor_length)
    logsnr = shift.logsnr_end - u * (shift.logsnr_end - start)
    t = 1.0 / (1.0 + np.exp(logsnr))  # sigmoid(-logsnr)
    return np.where(u <= 0, 0.0, np.where(u >= 1, 1.0, t))
  clamped = min(max(length, shift.min_length), shift.max_length)
  if shift.kind == "flux":
    alpha = np.exp(np.interp(np.log(clamped), [np.log(shift.min_length), np.log(shift.max_length)],
                             [np.log(shift.alpha_min), np.log(shift.alpha_max)]))
    return alpha * u / (1.0 + (alpha - 1.0) * u)
  if shift.kind == "full":
    mu = -(shift.base_shift + (shift.max_shift - shift.base_shift) * (clamped - shift.min_length)
           / (shift.max_length - shift.min_length))
    with np.errstate(divide="ignore"):
      ratio = np.where(u >= 1, 0.0, 1.0 / np.maximum(1.0 - u, 1e-300) - 1.0)
    t = np.where(u >= 1, 1.0, 1.0 - np.exp(mu) / (np.exp(mu) + ratio))
    return np.sin(t * np.pi / 2) if shift.use_sine else t
  raise ValueError(f"unknown distribution shift {shift.kind!r}")


def rf_times(steps: int, shift: DistributionShift, length: int) -> np.ndarray:
  """(steps + 1,) float32 times from 1 down to 0: the sampling schedule of a latent of `length` frames."""
  if steps < 1:
    raise ValueError(f"the number of steps must be at least 1, got {steps}")
  u = np.linspace(1.0, 0.0, steps + 1)
  t = warp(u, shift, length)
  t[0] = 1.0
  return t.astype(np.float32)
