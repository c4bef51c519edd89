"""The reference sampler on the PyTorch side (benchmarks and parity tests): diffusers' deterministic
DPM-Solver++(2M) with Stable Audio Open's settings, fed atan timesteps, as the authors run it."""

from __future__ import annotations

import math
import types

import torch
from diffusers import EDMDPMSolverMultistepScheduler


def reference_scheduler(steps: int) -> EDMDPMSolverMultistepScheduler:
  scheduler = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0,
                                             sigma_schedule="exponential", prediction_type="v_prediction",
                                             algorithm_type="dpmsolver++")
  scheduler.precondition_noise = types.MethodType(
      lambda self, sigma: torch.atan(torch.as_tensor(sigma)) / math.pi * 2, scheduler)
  scheduler.set_timesteps(steps)
  return scheduler
