"""MusicKV editing from text: the source (prompt 0) and its edits, with the source's self-attention
K/V injected into the edits' vital layers.

Two modes give the same result (sampling.kv):
  joint   source and edits as rows of one sampling run (the reference's way);
  cached  a source run records the vital layers' K/V at every step, then one run edits from
          that cache (the same edit pass serves real-audio edits from an inversion's K/V).
"""

from __future__ import annotations

import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.models import vae_ops
from musickv_jax.pipeline import common
from musickv_jax.pipeline.plan import EditPlan, build_plan, run_from_cache, run_plan
from musickv_jax.pipeline.results import EditResult, edit_result
from musickv_jax.pipeline.settings import EditSettings


def edit(model: LoadedModel, settings: EditSettings, *, init_latents: np.ndarray | None = None,
         step_noise: np.ndarray | None = None, decode_chunk_frames: int | None = vae_ops.DECODE_CHUNK_FRAMES,
         on_step: common.Listener | None = None) -> EditResult:
  """Generates the source and the edits. init_latents: the exact x_T (n, C, T), used as given;
  by default one noise draw from the seed is shared by every prompt, as in the reference.
  step_noise: a stochastic sampler's noise (steps, 1, C, T), shared by every prompt (ping-pong's
  default: drawn from the seed, shared too). Settings left open take the model's defaults."""
  settings = settings.for_model(model.config)
  plan = build_plan(model, settings, init_latents, step_noise=step_noise)
  latents = sample_edit(model, plan, settings.injection_mode, on_step=on_step)
  return edit_result(model, plan, settings, latents, decode_chunk_frames=decode_chunk_frames)


def sample_edit(model: LoadedModel, plan: EditPlan, mode: str, *, on_step: common.Listener | None = None) -> np.ndarray:
  """The sampling part of an edit: the plan's final latents (n, C, T), in the joint or cached mode."""
  steps = plan.steps.steps
  if common.samples_nothing(plan.steps):  # SDEdit at level 0: the start is the result
    return np.asarray(plan.x_init)
  if mode == "joint":
    return run_plan(model, plan, on_step=on_step)[0]
  # the cached mode's progress runs over both passes
  source, cache = run_plan(model, plan.select([0]), record_layers=plan.vital_layers,
                           on_step=common.offset_listener(on_step, 0, 2 * steps))
  others = run_from_cache(model, plan.select(range(1, plan.n)), cache,
                          on_step=common.offset_listener(on_step, steps, 2 * steps))
  return np.concatenate([source, others])
