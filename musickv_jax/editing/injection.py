"""MusicKV's KV injection through the functional sampler.

Prompt 0 is the source; `EditLayout.edits` lists the prompts that are edits of it (the
reference: prompt 1 only; `edit_all`: every prompt after the first); the rest are plain
generations. Rows as the DiT sees them with CFG: [uncond_0 .. uncond_{n-1}, cond_0 .. cond_{n-1}].
An edit's unconditional row blends in the source's unconditional K/V, its conditional row the
source's conditional K/V; the source row is never modified.

Two modes give the same result:
  joint   source and edits in one batch per step; the reference K/V are rows of that batch
          (no cache memory; the reference's way).
  cached  a source pass records the vital layers' K/V at every step into a KVCache
          (steps, n_vital, 2, S, H, D); edit passes, now or later and in any number, read it.
          Memory: steps x n_vital x 2 (k, v) x 2 (CFG branches) x S x width x bytes, e.g.
          100 x 3 x 2 x 2 x 1025 x 1536 x 4 B = 7.6 GB in float32 for SAO's full window
          (2.8 GB at 15 s with latent_length=fit; half of each in bfloat16).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.config import DiTConfig
from musickv_jax.models.dit import KVCache
from musickv_jax.sampling import guided, sampler

Array = jax.Array
MODES = ("joint", "cached")  # see the module docstring


@dataclasses.dataclass(frozen=True)
class EditLayout:
  """Which prompts of one sampling run receive the source's K/V, and how that maps onto the
  DiT's rows. In the joint mode prompt 0 of the run is the source; in a cached-mode edit pass
  the source is the cache and any prompt of the run can be an edit."""

  n_prompts: int
  edits: tuple[int, ...]  # prompt indices of this run that receive the source's K/V
  use_cfg: bool = True

  @classmethod
  def reference(cls, n_prompts: int, edit_all: bool = False, use_cfg: bool = True) -> "EditLayout":
    if n_prompts < 2:
      raise ValueError("editing needs at least two prompts: the source, then the edit")
    edits = tuple(range(1, n_prompts)) if edit_all else (1,)
    return cls(n_prompts, edits, use_cfg)

  @property
  def branches(self) -> int:
    return 2 if self.use_cfg else 1

  @property
  def rows(self) -> int:
    return self.branches * self.n_prompts

  def source_index(self) -> np.ndarray:
    """(rows,) int32: the row whose K/V each row blends in (itself where it is not an edit)."""
    index = np.arange(self.rows, dtype=np.int32)
    for branch in range(self.branches):
      for p in self.edits:
        index[branch * self.n_prompts + p] = branch * self.n_prompts
    return index

  def edit_rows(self, prompt: int) -> list[int]:
    return [branch * self.n_prompts + prompt for branch in range(self.branches)]


def expand_weights(schedule: Array, layers: tuple[int, ...], depth: int, layout: EditLayout) -> Array:
  """schedule (steps, n_layers) or (steps, n_layers, n_edits) -> (steps, depth, rows) blend
  weights: the schedule in the vital layers at the edits' rows, 0 elsewhere. Differentiable."""
  schedule = jnp.asarray(schedule)
  schedule = schedule.astype(jnp.promote_types(schedule.dtype, jnp.float32))  # float64 stays (gradient checks)
  steps = schedule.shape[0]
  if schedule.ndim == 2:
    schedule = jnp.repeat(schedule[:, :, None], len(layout.edits), axis=2)
  weights = jnp.zeros((steps, depth, layout.rows), schedule.dtype)
  layer_index = jnp.asarray(layers, jnp.int32)
  for e, prompt in enumerate(layout.edits):
    for row in layout.edit_rows(prompt):
      weights = weights.at[:, layer_index, row].set(schedule[:, :, e])
  return weights


def layer_mask(layers: tuple[int, ...], depth: int) -> Array:
  """(depth,) bool: True at `layers`."""
  return jnp.zeros((depth,), bool).at[jnp.asarray(layers, jnp.int32)].set(True)


def bypass_mask(skip_layers: tuple[int, ...], depth: int) -> Array | None:
  if not skip_layers:
    return None
  return jnp.zeros((depth,), bool).at[jnp.asarray(skip_layers, jnp.int32)].set(True)


def joint_steps(schedule, layers, dit_config: DiTConfig, layout: EditLayout,
                skip_layers: tuple[int, ...] = ()) -> guided.KVSteps:
  """KV controls for the joint mode (everything in one batch)."""
  return guided.KVSteps(inject_weight=expand_weights(schedule, tuple(layers), dit_config.depth, layout),
                        source_index=jnp.asarray(layout.source_index()),
                        bypass=bypass_mask(tuple(skip_layers), dit_config.depth),
                        blend_layers=layer_mask(tuple(layers), dit_config.depth))


def cached_steps(schedule, cache: KVCache, dit_config: DiTConfig, layout: EditLayout,
                 skip_layers: tuple[int, ...] = ()) -> guided.KVSteps:
  """KV controls for an edit pass reading a recorded source cache.

  cache: k, v (steps, n_layers, source_rows, S, H, D). With source_rows equal to the edit
  pass's CFG branches (uncond, cond), each row reads the cache row of its own branch; with one
  source row (e.g. recorded during a conditional-only inversion), every row reads it.
  `layout` describes the edit pass's own prompts."""
  source_rows = cache.k.shape[2]
  if source_rows not in (1, layout.branches):
    raise ValueError(f"the cache holds {source_rows} source rows but the edit pass has {layout.branches} "
                     "CFG branch(es); record and edit with the same guidance setting")
  index = np.zeros(layout.rows, np.int32)
  if source_rows == layout.branches:
    for branch in range(layout.branches):
      index[branch * layout.n_prompts:(branch + 1) * layout.n_prompts] = branch
  weights = expand_weights(schedule, cache.layers, dit_config.depth, layout)
  return guided.KVSteps(inject_weight=weights, source_index=jnp.asarray(index), injected=cache,
                        bypass=bypass_mask(tuple(skip_layers), dit_config.depth),
                        blend_layers=layer_mask(tuple(cache.layers), dit_config.depth))


def take_prompts(cond: guided.GuidedConditioning, prompts: list[int], n_prompts: int,
                 use_cfg: bool) -> guided.GuidedConditioning:
  """The conditioning rows of some prompts (both CFG branches)."""
  rows = [b * n_prompts + p for b in range(2 if use_cfg else 1) for p in prompts]
  idx = jnp.asarray(rows, jnp.int32)
  return guided.GuidedConditioning(cross_tokens=jnp.take(cond.cross_tokens, idx, axis=0),
                                   global_cond=jnp.take(cond.global_cond, idx, axis=0),
                                   guidance=jnp.take(cond.guidance, jnp.asarray(prompts, jnp.int32), axis=0))


def record_source(dit_params, cond: guided.GuidedConditioning, x_init: Array, plan: sampler.StepPlan, key: Array,
                  layers: tuple[int, ...], *, dit_config: DiTConfig, solver: str, use_cfg: bool,
                  skip_layers: tuple[int, ...] = ()) -> tuple[Array, KVCache]:
  """The cached mode's source pass: generates the source and records its vital-layer K/V.

  cond / x_init hold the source alone (1 prompt). Returns (source latents, KVCache)."""
  kv = guided.KVSteps(bypass=bypass_mask(tuple(skip_layers), dit_config.depth)) if skip_layers else None
  return guided.sample_in_chunks(dit_params, cond, x_init, plan, key, kv, jnp.zeros((1,), jnp.int32),
                                 dit_config=dit_config, solver=solver, use_cfg=use_cfg, record_layers=tuple(layers))
