"""The diffusion loop as one pure function: `lax.scan` over steps.

carry = SolverState (x, multistep history); per-step inputs = a `StepPlan` (noise level and the
next, the DiT's time input, solver order, and the objective's coefficients) plus any pytree of
per-step arrays a caller adds (injection weights, a stochastic sampler's noise, ...). A
`denoise(x, step, step_extra) -> (denoised, aux)` function is all the loop knows of the model;
`aux` is stacked over steps (e.g. recorded K/V).

The objective is data: the model sees c_in x at its time input, and its prediction v becomes the
denoised estimate c_skip x - c_out v. The v objective (EDM noise levels sigma): c_in = 1/sqrt(s^2+1),
c_skip = 1/(s^2+1), c_out = s/sqrt(s^2+1), time atan(s) 2/pi. Rectified flow (times t in [0, 1]):
c_in = 1, c_skip = 1, c_out = t, time t.

Progress: the program has no host callbacks (they would keep it out of JAX's persistent
compilation cache). Drivers that want progress run the loop in chunks of steps (`run_steps` from
a carried state, `chunk_length` steps at a time) and call the listener they were given between
chunks (`run_in_chunks(..., on_step=listener)`); the chunks compute exactly what one scan
computes. A listener is an argument, never module state: two runs in two threads each report to
their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.sampling import regions, solvers

Array = jax.Array
Denoiser = Callable[[Array, Any, Any], tuple[Array, Any]]
# listener(steps done, total steps), called between chunks of steps; it may raise to stop the run
Listener = Callable[[int, int], None]


@flax.struct.dataclass
class StepPlan:
  """Per-step arrays, each with a leading axis of length `steps`."""

  sigma: Array  # noise level (rectified flow: time) at the start of the step
  sigma_next: Array  # noise level after the step (0 at the end)
  timestep: Array  # the DiT time input at `sigma`
  second_order: Array  # bool: multistep correction
  c_in: Array  # the model sees c_in * x
  c_skip: Array  # denoised = c_skip * x - c_out * v
  c_out: Array

  @property
  def steps(self) -> int:
    return self.sigma.shape[0]


def model_coefficients(levels, objective: str = "v") -> dict[str, np.ndarray]:
  """The DiT's time input and c_in, c_skip, c_out at noise levels (v) or times (rectified flow)."""
  s = np.asarray(levels, np.float64)
  if objective == "v":
    return {"timestep": np.arctan(s) * 2 / np.pi, "c_in": 1.0 / np.sqrt(s * s + 1.0), "c_skip": 1.0 / (s * s + 1.0),
            "c_out": s / np.sqrt(s * s + 1.0)}
  return {"timestep": s, "c_in": np.ones_like(s), "c_skip": np.ones_like(s), "c_out": s}


def make_plan(sigmas, solver: str = "dpmpp-2m", objective: str = "v") -> StepPlan:
  """StepPlan from a descending schedule of steps + 1 noise levels (rectified flow: times) ending in 0."""
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or len(sigmas) < 2:
    raise ValueError(f"sigmas must be a 1-D schedule of steps + 1 values, got shape {sigmas.shape}")
  steps = len(sigmas) - 1
  coefficients = {name: jnp.asarray(value, jnp.float32)
                  for name, value in model_coefficients(sigmas[:-1], objective).items()}
  return StepPlan(sigma=jnp.asarray(sigmas[:-1], jnp.float32), sigma_next=jnp.asarray(sigmas[1:], jnp.float32),
                  second_order=jnp.asarray(solvers.second_order_steps(solver, steps)), **coefficients)


# ----------------------------------------------------------------------------- the loop


def sde_noise(key: Array, step: Array, sample_ids: Array, shape: tuple[int, ...], dtype) -> Array:
  """Noise of one SDE step, (B, *shape): row b is drawn from fold_in(fold_in(key_b, step), sample_ids[b]),
  where key_b is `key` or, for a (B,) array of keys, its row b (rows of different jobs batched
  together). A sample's noise path does not depend on which other samples share its batch."""
  keys = jnp.broadcast_to(key, sample_ids.shape)
  return jax.vmap(lambda k, i: jax.random.normal(jax.random.fold_in(jax.random.fold_in(k, step), i), shape, dtype))(
      keys, sample_ids)


def run_steps(denoise: Denoiser, state: solvers.SolverState, plan: StepPlan, step_inputs: Any, step_index: Array,
              *, solver: str = "dpmpp-2m", key: Array | None = None, sample_ids: Array | None = None,
              step_noise: Array | None = None, remat: bool = False,
              paste: regions.Paste | None = None) -> tuple[solvers.SolverState, Any]:
  """Runs the steps of `plan` (a whole plan or a chunk of one) from `state`.

  step_inputs: pytree of arrays with a leading axis of the plan's steps, handed to `denoise`.
  step_index (steps,): each step's index in the whole loop (the SDE noise of a step depends on it).
  key: PRNG key for the SDE sampler, or (B,) keys, one per row; sample_ids (B,) name each row's noise
    stream (default 0..B-1).
  step_noise (steps, B, ...): the noise each step of a stochastic sampler adds, given instead of
    drawn from the key (to reproduce another implementation's noise path; gradients still flow).
  remat: recompute each step in the backward pass (memory for gradients w.r.t. schedules).
  paste: region edits (sampling.regions): after every step, rows are pasted back toward their
    reference where their mask is below 1 (its per-step arrays have the plan's steps).
  Returns (state after the steps, aux stacked over steps).
  """
  solvers.check_solver(solver)
  stochastic = solver in solvers.STOCHASTIC
  if stochastic and key is None and step_noise is None:
    raise ValueError(f"the {solver} sampler needs a PRNG key or the step noise")
  if sample_ids is None:
    sample_ids = jnp.arange(state.x.shape[0])

  fixed_paste = None if paste is None else paste.fixed()

  def step(state: solvers.SolverState, xs):
    p, extra, index, given_noise, paste_step = xs
    denoised, aux = denoise(state.x, p, extra)
    noise = None
    if stochastic:
      noise = given_noise if given_noise is not None else sde_noise(key, index, sample_ids, state.x.shape[1:],
                                                                     state.x.dtype)
    state = solvers.step(solver, state, denoised, p.sigma, p.sigma_next, p.second_order, noise)
    if fixed_paste is not None:
      state = state.replace(x=regions.apply(fixed_paste, state.x, paste_step))
    return state, aux

  if remat:
    step = jax.checkpoint(step)
  paste_steps = None if paste is None else paste.per_step()
  return jax.lax.scan(step, state, (plan, step_inputs, step_index, step_noise, paste_steps))


def run(denoise: Denoiser, x_init: Array, plan: StepPlan, step_inputs: Any = None, *, solver: str = "dpmpp-2m",
        key: Array | None = None, sample_ids: Array | None = None, step_noise: Array | None = None,
        remat: bool = False, paste: regions.Paste | None = None) -> tuple[Array, Any]:
  """Runs the sampler from x_init (already at noise level plan.sigma[0]) to the end of the plan, as
  one scan (see run_steps for the arguments). Returns (x_0, aux stacked over steps)."""
  final, aux = run_steps(denoise, solvers.init_state(x_init), plan, step_inputs, jnp.arange(plan.steps),
                         solver=solver, key=key, sample_ids=sample_ids, step_noise=step_noise, remat=remat,
                         paste=paste)
  return final.x, aux


CHUNK_TARGET = 10  # steps per chunk when a driver reports progress


def chunk_length(steps: int, target: int = CHUNK_TARGET) -> int:
  """The largest divisor of `steps` that is at most `target`: equal chunks, one compiled program."""
  return max(d for d in range(1, min(steps, target) + 1) if steps % d == 0)


def chunks(steps: int, target: int = CHUNK_TARGET) -> list[slice]:
  size = chunk_length(steps, target)
  return [slice(start, start + size) for start in range(0, steps, size)]


def take_steps(tree, steps: slice):
  """The entries of `steps` of every per-step array of a pytree (leading axis: steps)."""
  return jax.tree.map(lambda a: a[steps], tree)


def run_in_chunks(run_chunk: Callable[[Any, Any, Array], tuple[Any, Any]], state, per_step, steps: int,
                  on_step: Listener | None = None):
  """The chunked step loop every driver shares: run_chunk(state, per-step inputs of a chunk, the
  chunk's step indices) -> (state, aux) for equal chunks of the steps, on_step(steps done, steps)
  called after each. Returns (final state, aux concatenated over steps, or None)."""
  recorded = []
  for chunk in chunks(steps):
    state, aux = run_chunk(state, take_steps(per_step, chunk), jnp.arange(chunk.start, chunk.stop))
    recorded.append(aux)
    if on_step is not None:
      on_step(chunk.stop, steps)
  if all(aux is None for aux in recorded):
    return state, None
  return state, jax.tree.map(lambda *parts: jnp.concatenate(parts), *recorded)


def v_denoiser(v_fn: Callable[[Array, Array, Any], tuple[Array, Any]]) -> Denoiser:
  """Wraps a velocity model v_fn(c_in x, time, extra) -> (v, aux) as a data-prediction denoiser
  D = c_skip x - c_out v, the coefficients of the step's objective (see the module docstring)."""
  def denoise(x, step, extra):
    v, aux = v_fn(x * step.c_in.astype(x.dtype), step.timestep, extra)
    return step.c_skip.astype(x.dtype) * x - step.c_out.astype(x.dtype) * v.astype(x.dtype), aux
  return denoise
