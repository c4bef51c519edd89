"""Inversion: deterministic DPM-Solver++ run backwards, from a clean latent up to sigma_max, so
that sampling forward from the result returns (approximately) the latent.

The sigmas are the sampling schedule in ascending order with a 0 in front,
sig = [0, sigma_min, ..., sigma_max] (steps + 1 values). Step i moves x from sig[i] to sig[i+1]:
  D = denoised(x, sig[i])   (model input x * c_in(sig[i]))
  x' = (sig[i+1] / sig[i]) x - expm1(-h) (D + D1 / 2),  h = log sig[i] - log sig[i+1] < 0
with the multistep D1 = (D - D_prev) / r, r = h_prev / h. Like the reference inverse scheduler
(MusicKV's CosineDPMSolverMultistepInverseScheduler), step 0 is an identity step (the clean
latent is taken as the sample at sigma_min), step 1 is effectively first order (its history
sits at sigma 0) and the last step is first order.

Two variants of the model's time input:
  reference   timestep = atan(sig[i+1]) * 2 / pi, one entry ahead of the sigma that scales the
              model input: the reference's indexing, so results match the paper's code;
  consistent  timestep = atan(sig[i]) * 2 / pi, the same point as the input scaling.
`order=1` gives first-order (DDIM-like) inversion.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import DiTConfig
from musickv_jax.models.dit import KVCache
from musickv_jax.sampling import guided, schedules, solvers
from musickv_jax.sampling import sampler as sampler_lib
from musickv_jax.sampling.windows import Windows

Array = jax.Array
VARIANTS = ("reference", "consistent")


@flax.struct.dataclass
class InversionPlan:
  """Per-step arrays (leading axis `steps`). The model sees c_in x at `timestep` and its v becomes
  D = c_skip x - c_out v (sampler.model_coefficients at model_sigma)."""

  model_sigma: Array  # noise level (rectified flow: time) at which the model is evaluated and D defined
  timestep: Array  # the DiT's time input
  sigma: Array  # the solver's current sigma (sigma_min at the identity step 0)
  sigma_next: Array  # the solver's target sigma
  second_order: Array  # bool
  c_in: Array
  c_skip: Array
  c_out: Array
  solver: str = flax.struct.field(pytree_node=False, default="dpmpp")  # dpmpp (v) or euler (rectified flow)

  @property
  def steps(self) -> int:
    return self.sigma.shape[0]


def make_inversion_plan(steps: int, *, variant: str = "reference", order: int = 2, sigma_min: float = schedules.SIGMA_MIN,
                        sigma_max: float = schedules.SIGMA_MAX, schedule: str = "exponential") -> InversionPlan:
  if variant not in VARIANTS:
    raise ValueError(f"unknown inversion {variant!r}; use one of {VARIANTS}")
  if order not in (1, 2):
    raise ValueError(f"inversion order must be 1 or 2, got {order}")
  descending = schedules.sigma_schedule(schedule, steps, sigma_min, sigma_max)[:-1].astype(np.float64)
  sig = np.concatenate([[0.0], descending[::-1]])  # [0, sigma_min, ..., sigma_max]
  current, target = sig[:-1], sig[1:]
  solver_sigma = current.copy()
  solver_sigma[0] = target[0]  # identity step: sigma_s := sigma_min = sigma_t, h = 0
  time_sigma = target if variant == "reference" else current
  second = np.zeros(steps, bool)
  if order == 2:
    second[2:steps - 1] = True  # steps 0 (identity), 1 (history at sigma 0) and the last are first order
  coefficients = sampler_lib.model_coefficients(current, "v")
  return InversionPlan(model_sigma=jnp.asarray(current, jnp.float32),
                       timestep=jnp.asarray(np.arctan(time_sigma) * 2 / np.pi, jnp.float32),
                       sigma=jnp.asarray(solver_sigma, jnp.float32), sigma_next=jnp.asarray(target, jnp.float32),
                       second_order=jnp.asarray(second),
                       **{name: jnp.asarray(coefficients[name], jnp.float32) for name in ("c_in", "c_skip", "c_out")})


def make_rf_inversion_plan(times) -> InversionPlan:
  """Rectified flow's inversion: Euler run backwards along the sampling times (descending, from 1 to
  0), from the clean latent at t = 0 up to t = 1. Step k moves from t_k to t_{k+1} (ascending) and
  evaluates the model at the time it moves to, where the sampling step that returns from there
  evaluates it (x_{k+1} is not known yet; x_k stands for it, as DDIM inversion does)."""
  ascending = np.asarray(times, np.float64)[::-1]  # [0, ..., 1]
  current, target = ascending[:-1], ascending[1:]
  coefficients = sampler_lib.model_coefficients(target, "rectified_flow")
  as32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  return InversionPlan(model_sigma=as32(target), timestep=as32(coefficients["timestep"]), sigma=as32(current),
                       sigma_next=as32(target), second_order=jnp.zeros(len(current), bool),
                       c_in=as32(coefficients["c_in"]), c_skip=as32(coefficients["c_skip"]),
                       c_out=as32(coefficients["c_out"]), solver="euler")


def run_inversion_steps(denoise, state: solvers.SolverState, plan: InversionPlan) -> tuple[solvers.SolverState, object]:
  """Runs the steps of `plan` (a whole plan or a chunk of one) from `state`."""
  def step(state: solvers.SolverState, p: InversionPlan):
    denoised, aux = denoise(state.x, p, None)
    if plan.solver == "euler":
      return solvers.euler_step(state, denoised, p.sigma, p.sigma_next, p.model_sigma), aux
    return solvers.dpmpp_step(state, denoised, p.sigma, p.sigma_next, p.second_order), aux

  return jax.lax.scan(step, state, plan)


def run_inversion(denoise, x0: Array, plan: InversionPlan) -> tuple[Array, object]:
  """x0 (B, C, T), the clean latent, -> (x at sigma_max, aux stacked over steps)."""
  final, aux = run_inversion_steps(denoise, solvers.init_state(x0), plan)
  return final.x, aux


@functools.partial(jax.jit, static_argnames=("dit_config", "record_layers"))
def invert(dit_params, cond: guided.GuidedConditioning, x0: Array, plan: InversionPlan, *, dit_config: DiTConfig,
           record_layers: tuple[int, ...] = ()) -> tuple[Array, KVCache | None]:
  """Inverts clean latents x0 (B, C, T) under conditional-only guidance (scale 1, as the reference).

  cond: the prompts' conditional rows only (B, ...). With record_layers, also returns the K/V of
  those layers at every inversion step (steps, n_layers, B, S, H, D)."""
  denoise = guided.guided_denoiser(dit_params, dit_config, cond, use_cfg=False, record_layers=record_layers)
  return run_inversion(denoise, x0, plan)


@functools.partial(jax.jit, static_argnames=("dit_config", "record_layers", "mesh"))
def invert_chunk(dit_params, cond: guided.GuidedConditioning, state: solvers.SolverState, plan: InversionPlan,
                 windows: Windows | None = None, *, dit_config: DiTConfig, record_layers: tuple[int, ...] = (),
                 mesh: jax.sharding.Mesh | None = None):
  if windows is None:
    denoise = guided.guided_denoiser(dit_params, dit_config, cond, use_cfg=False, record_layers=record_layers)
  else:
    denoise = guided.windowed_denoiser(dit_params, dit_config, cond, windows, use_cfg=False, mesh=mesh)
  return run_inversion_steps(denoise, state, plan)


def invert_in_chunks(dit_params, cond: guided.GuidedConditioning, x0: Array, plan: InversionPlan,
                     windows: Windows | None = None, *, dit_config: DiTConfig, record_layers: tuple[int, ...] = (),
                     mesh: jax.sharding.Mesh | None = None,
                     on_step: sampler_lib.Listener | None = None) -> tuple[Array, KVCache | None]:
  """`invert`, a chunk of steps at a time, calling on_step between chunks (see
  guided.sample_in_chunks). windows: x0 is longer than the model's window (one inversion of the
  whole latent, the windows' predictions fused at every step; guided.windowed_denoiser, its
  groups spread over `mesh`)."""
  if windows is not None and record_layers:
    raise ValueError("recording K/V is not supported over windows")

  def run_chunk(state, chunk_plan, step_index):
    return invert_chunk(dit_params, cond, state, chunk_plan, windows, dit_config=dit_config,
                        record_layers=record_layers, mesh=mesh)

  state, aux = sampler_lib.run_in_chunks(run_chunk, solvers.init_state(x0), plan, plan.steps, on_step)
  return state.x, aux
