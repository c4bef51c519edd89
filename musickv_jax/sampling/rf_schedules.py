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
  sa3     Stable Audio 3's pipelines: t = sigmoid(-(lambda_end - u (lambda_end - anchor_logsnr))), the
          same curve as logsnr at rate 0, but computed as those pipelines compute it, in float32
          step by step (torch's linspace, then the log-SNR, then 1 / (1 + e^lambda)). The DiT's
          time features reach 1e4 Hz, so one float32 rounding of t moves its output by ~1e-3 of
          its size on a random model: the schedule is reproduced to the bit where the arithmetic
          allows (torch's vectorised exp is not correctly rounded; measured: 1 ulp apart at some
          entries of some schedules).
Built on the host in float64 (sa3: float32) and handed to the sampler as float32 data, like the
sigma schedules. A run started part-way (audio-to-audio at noise level s < 1) warps the grid
u = s, ..., 0 and starts at exactly s, as stable-audio-tools and diffusers do (the warped second
point may lie above s: the reference's own quirk, reproduced).
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
  if shift.kind == "sa3":  # the same curve (rf_times computes it in float32, as the pipelines do)
    shift = DistributionShift(kind="logsnr", rate=0.0, anchor_logsnr=shift.anchor_logsnr, logsnr_end=shift.logsnr_end)
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


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
  """torch.linspace(start, end, steps) in float32 as torch's CPU kernel computes it: from the start
  for the first half and from the end for the rest, each point one fused multiply-add."""
  start32, end32 = np.float32(start), np.float32(end)
  if steps == 1:
    return np.asarray([start32], np.float32)
  step = (end32 - start32) / np.float32(steps - 1)
  i = np.arange(steps)
  from_start = (np.float64(start32) + np.float64(step) * i).astype(np.float32)
  from_end = (np.float64(end32) - np.float64(step) * (steps - 1 - i)).astype(np.float32)
  return np.where(i < steps // 2, from_start, from_end).astype(np.float32)


def sa3_times(steps: int, shift: DistributionShift, start: float = 1.0) -> np.ndarray:
  """The Stable Audio 3 pipelines' schedule (see the module), steps + 1 float32 times ending in 0."""
  u = torch_linspace(start, 0.0, steps + 1)
  logsnr = (np.float32(shift.logsnr_end) - u * np.float32(shift.logsnr_end - shift.anchor_logsnr)).astype(np.float32)
  exp = np.exp(logsnr.astype(np.float64)).astype(np.float32)
  t = (np.float32(1.0) / (np.float32(1.0) + exp)).astype(np.float32)
  t[0] = np.float32(start)
  t[-1] = np.float32(0.0)  # the pipelines drop the last point of the grid and append 0
  return t


def rf_times(steps: int, shift: DistributionShift, length: int, start: float = 1.0) -> np.ndarray:
  """(steps + 1,) float32 times from `start` (1: pure noise) down to 0: the sampling schedule of a
  latent of `length` frames."""
  if steps < 1:
    raise ValueError(f"the number of steps must be at least 1, got {steps}")
  if not 0.0 < start <= 1.0:
    raise ValueError(f"the first time must be in (0, 1], got {start}")
  if shift.kind == "sa3":
    return sa3_times(steps, shift, start)
  u = np.linspace(start, 0.0, steps + 1)
  t = warp(u, shift, length)
  t[0] = start
  return t.astype(np.float32)
