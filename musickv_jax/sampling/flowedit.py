"""FlowEdit (Kulikov et al., 2024): editing a clean latent without inverting it.

Every row starts at its reference, the recording's latent x_src, and its state X moves by the
difference of the model's directions under its prompt and its source row's prompt. At every step
(level s -> s'), for each of `samples` noise draws n (data: the scan's input):

  z     = a(s) x_src + s n              the reference noised to the step's level
  Z_r   = z + (X_r - x_src)             each row's noised state
  d_r   = (Z_r - D(Z_r; s, c_r)) / s    the probability-flow ODE's direction dx/ds
  X_r  += (s' - s) mean_n(d_r - d_source(r))

with D the guided denoiser (each row with its own guidance, and its own K/V injection: the source
row is computed anyway, so its keys and values reach the edit rows' vital layers as in any joint
edit). Rectified flow: s is the time t, a(s) = 1 - t and d is the velocity; the v objective: s is
sigma, a(s) = 1 (x = x0 + sigma n) and d is the PF-ODE's derivative of Karras et al. The source row
(its own source) never moves: it stays x_src bit for bit, and so does a row whose prompt and
guidance equal its source's (every difference is zero)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.sampling import regions, solvers
from musickv_jax.sampling.sampler import Denoiser, StepPlan

Array = jax.Array


@flax.struct.dataclass
class FlowEditData:
  """reference (n, C, T): each row's x_src; source_row (n,) int32: the row each row's difference is
  taken against (itself: never moves); noise (steps, samples, n, C, T): the draws of every step
  (the rows of one job share theirs); clean_scale (steps,): a(s) of each step's level."""

  reference: Array
  source_row: Array
  noise: Array
  clean_scale: Array

  @property
  def samples(self) -> int:
    return int(self.noise.shape[1])

  def per_step(self) -> dict:
    return {"noise": self.noise, "clean_scale": self.clean_scale}

  def fixed(self) -> "FlowEditData":
    return self.replace(noise=None, clean_scale=None)


def run_steps(denoise: Denoiser, state: solvers.SolverState, plan: StepPlan, step_inputs: Any, data: FlowEditData,
              *, paste: regions.Paste | None = None, remat: bool = False) -> tuple[solvers.SolverState, Any]:
  """The FlowEdit steps of `plan` (a plan or a chunk of one; data's per-step arrays alike) from
  `state` (state.x: the rows' X). step_inputs: the denoiser's per-step inputs (injection weights).
  paste: region edits, applied after every step. Returns (state, the denoiser's aux of each step's
  last draw)."""
  chex.assert_equal_shape([state.x, data.reference])
  fixed, fixed_paste = data.fixed(), None if paste is None else paste.fixed()
  reference = fixed.reference.astype(state.x.dtype)

  def step(state: solvers.SolverState, xs):
    p, extra, per_step, paste_step = xs
    x = state.x
    offset = x - reference  # exactly 0 in the rows that have not moved

    def one_draw(total, noise):
      z = per_step["clean_scale"].astype(x.dtype) * reference + p.sigma.astype(x.dtype) * noise.astype(x.dtype)
      noised = z + offset
      denoised, aux = denoise(noised, p, extra)
      direction = (noised - denoised.astype(x.dtype)) / p.sigma.astype(x.dtype)
      return total + (direction - jnp.take(direction, fixed.source_row, axis=0)), aux

    total, aux = jax.lax.scan(one_draw, jnp.zeros_like(x), per_step["noise"])
    x = x + (p.sigma_next - p.sigma).astype(x.dtype) * (total / per_step["noise"].shape[0])
    if fixed_paste is not None:
      x = regions.apply(fixed_paste, x, paste_step)
    return state.replace(x=x), jax.tree.map(lambda a: a[-1], aux)

  if remat:
    step = jax.checkpoint(step)
  paste_steps = None if paste is None else paste.per_step()
  return jax.lax.scan(step, state, (plan, step_inputs, data.per_step(), paste_steps))


def join(datas: Sequence[FlowEditData], padding: int = 0) -> FlowEditData:
  """The data of consecutive rows as one (source rows offset to their place), then `padding` rows
  that never move (a copy of the first row's reference, their own source)."""
  offsets = np.cumsum([0] + [int(data.reference.shape[0]) for data in datas])
  total = int(offsets[-1])
  first = datas[0]
  noise = first.noise
  return FlowEditData(
      reference=jnp.concatenate([data.reference for data in datas] + [jnp.repeat(first.reference[:1], padding, axis=0)]),
      source_row=jnp.concatenate([data.source_row + offset for data, offset in zip(datas, offsets)]
                                 + [jnp.arange(total, total + padding, dtype=jnp.int32)]).astype(jnp.int32),
      noise=jnp.concatenate([data.noise for data in datas]
                            + [jnp.zeros((*noise.shape[:2], padding, *noise.shape[3:]), noise.dtype)], axis=2),
      clean_scale=first.clean_scale)


def side_by_side(datas: Sequence[FlowEditData]) -> FlowEditData:
  """Blocks' data as the rows of one call whose devices each run one block (source rows stay local)."""
  first = datas[0]
  return first.replace(reference=jnp.concatenate([data.reference for data in datas]),
                       source_row=jnp.concatenate([data.source_row for data in datas]),
                       noise=jnp.concatenate([data.noise for data in datas], axis=2))
