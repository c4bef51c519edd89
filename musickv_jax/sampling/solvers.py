"""Solver steps as pure functions of arrays, each from the denoised estimate D of the current x.

The v objective's noise levels sigma (DPM-Solver++, data prediction, lambda = -log sigma):
  dpmpp-1       first order (DDIM-like):   x' = (s'/s) x - expm1(-h) D
  dpmpp-2m      multistep, midpoint:       x' = (s'/s) x - expm1(-h) (D + D1 / 2)
  dpmpp-2m-sde  SDE, eta = 1, midpoint:    x' = (s'/s) e^-h x - expm1(-2h) (D + D1 / 2) + s' sqrt(-expm1(-2h)) n
with h = lambda' - lambda = log(s / s'), D1 = (D - D_prev) / r, r = h_prev / h. The first step
and the final step (s' = 0, which returns D) are first order, as the references do.

Rectified flow's times t (x_t = (1 - t) x0 + t noise, v = (x - D) / t):
  euler         x' = x + (t' - t) v                     (the ODE; the last step returns D)
  pingpong      x' = (1 - t') D + t' n                  (fresh noise n every step, the few-step sampler)
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SOLVERS = ("dpmpp-2m", "dpmpp-2m-sde", "dpmpp-1", "euler", "pingpong")
STOCHASTIC = ("dpmpp-2m-sde", "pingpong")  # the solvers that add noise every step
RECTIFIED_FLOW = ("euler", "pingpong")  # the solvers of rectified flow's times (the others: EDM noise levels)


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
  if solver in ("dpmpp-2m", "dpmpp-2m-sde"):
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


def euler_step(state: SolverState, denoised: Array, t: Array, t_next: Array, t_model: Array | None = None) -> SolverState:
  """Rectified flow's Euler step x' = x + (t' - t) v, with v = (x - D) / t_model recovered from the
  denoised estimate at the time the model saw (t when sampling; an inversion evaluates the model at
  the time it steps to). The last step of sampling (t' = 0) returns D exactly."""
  t_model = t if t_model is None else t_model
  velocity_scale = (t_next - t) / jnp.where(t_model > 0, t_model, 1.0)
  x_new = jnp.where(t_next <= 0, denoised, state.x + velocity_scale * (state.x - denoised))
  return SolverState(x=x_new.astype(state.x.dtype), prev_denoised=denoised, prev_h=state.prev_h)


def pingpong_step(state: SolverState, denoised: Array, t_next: Array, noise: Array) -> SolverState:
  """The ping-pong step of the few-step rectified-flow models: to the denoised estimate, then noised
  again to the next time with fresh noise (multiplied by t' = 0 at the last step)."""
  x_new = (1.0 - t_next) * denoised + t_next * noise
  return SolverState(x=x_new.astype(state.x.dtype), prev_denoised=denoised, prev_h=state.prev_h)


def step(solver: str, state: SolverState, denoised: Array, sigma: Array, sigma_next: Array, second_order: Array,
         noise: Array | None = None) -> SolverState:
  """One step of `solver` (static) from the denoised estimate at noise level / time `sigma`."""
  if solver == "euler":
    return euler_step(state, denoised, sigma, sigma_next)
  if solver == "pingpong":
    if noise is None:
      raise ValueError("the ping-pong step needs noise")
    return pingpong_step(state, denoised, sigma_next, noise)
  return dpmpp_step(state, denoised, sigma, sigma_next, second_order, sde=solver == "dpmpp-2m-sde", noise=noise)
