"""DPM-Solver++ steps as pure functions of arrays (data prediction, lambda = -log sigma).

  dpmpp-1       first order (DDIM-like):   x' = (s'/s) x - expm1(-h) D
  dpmpp-2m      multistep, midpoint:       x' = (s'/s) x - expm1(-h) (D + D1 / 2)
  dpmpp-2m-sde  SDE, eta = 1, midpoint:    x' = (s'/s) e^-h x - expm1(-2h) (D + D1 / 2) + s' sqrt(-expm1(-2h)) n
with h = lambda' - lambda = log(s / s'), D1 = (D - D_prev) / r, r = h_prev / h. The first step
and the final step (s' = 0, which returns D) are first order, as the references do.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SOLVERS = ("dpmpp-2m", "dpmpp-2m-sde", "dpmpp-1")


@flax.struct.dataclass
class SolverState:
  """Carry of the sampling loop: the current sample and the multistep history."""

  x: Array  # (B, C, T)
  prev_denoised: Array  # (B, C, T); zeros before the first step
  prev_h: Array  # () float32; step size of the previous step


def init_state(x: Array) -> SolverState:
  return SolverState(x=x, prev_denoised=jnp.zeros_like(x), prev_h=jnp.zeros((), jnp.float32))


def second_order_steps(solver: str, steps: int) -> np.ndarray:
  """(steps,) bool: which steps use the second-order update (all but the first and the last)."""
  check_solver(solver)
  flags = np.zeros(steps, bool)
  if solver != "dpmpp-1":
    flags[1:steps - 1] = True
  return flags


def check_solver(solver: str) -> None:
  if solver not in SOLVERS:
    raise ValueError(f"unknown sampler {solver!r}; use one of {', '.join(SOLVERS)}")


def dpmpp_step(state: SolverState, denoised: Array, sigma: Array, sigma_next: Array, second_order: Array, *,
               sde: bool = False, noise: Array | None = None) -> SolverState:
  """One DPM-Solver++ step from sigma to sigma_next given the data prediction `denoised`.

  second_order: () bool, use the multistep correction; sde: add noise (needs `noise`, like x).
  The final step (sigma_next == 0) returns `denoised`; written with safe values on both
  branches so gradients stay finite.
  """
  final = sigma_next <= 0
  safe_next = jnp.where(final, 1.0, sigma_next)
  h = jnp.log(sigma) - jnp.log(safe_next)
  safe_h = jnp.where(final, 1.0, h)
  r = state.prev_h / safe_h
  d1 = (denoised - state.prev_denoised) / jnp.where(second_order, r, 1.0)
  d = denoised + jnp.where(second_order, 0.5, 0.0) * d1
  if sde:
    if noise is None:
      raise ValueError("the SDE step needs noise")
    x_new = (safe_next / sigma) * jnp.exp(-safe_h) * state.x - jnp.expm1(-2 * safe_h) * d \
        + safe_next * jnp.sqrt(-jnp.expm1(-2 * safe_h)) * noise
  else:
    x_new = (safe_next / sigma) * state.x - jnp.expm1(-safe_h) * d
  x_new = jnp.where(final, denoised, x_new)
  return SolverState(x=x_new.astype(state.x.dtype), prev_denoised=denoised, prev_h=safe_h.astype(jnp.float32))
