"""Recordings longer than the model's window: one inversion and one edit over the whole latent.

The recording is encoded whole (the windowed VAE is exact), and its latent is covered by
overlapping windows of at most the model's length (sampling.windows). At every step of the
inversion and of the edit the DiT runs on every window (the windows are rows of the batch, in
groups sized to the memory budget) and the windows' predictions are fused with smooth weights
that sum to one; the solver steps the whole latent. In the edit, the source's window i injects
its K/V into every edit's window i (the joint mode, with windows as rows).

Each window has a plan of its own (pipeline.plan: the same prompts, its own conditioning); a
group of windows is the block of its windows' plans, so its rows are [branch][window][prompt].
Conditioning per window, as SAO was trained (random crops of longer files, conditioned on the
crop's start in the file and the file's length): seconds_start = the window's start in the
recording, seconds_total = the recording's length. A recording that fits one window keeps the
single-window conditioning (seconds_start 0, seconds_total the model's maximum, as the reference).

On several local devices the groups of windows are spread over them (a 1-D `data` mesh, the
parameters replicated), each device running its groups one after another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import ModelConfig
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import common, memory
from musickv_jax.pipeline import regions as regions_lib
from musickv_jax.pipeline.flowedit import flowedit_data
from musickv_jax.pipeline.plan import EditPlan, block_of, build_plan, edit_rows
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings, InversionSettings, WindowSettings
from musickv_jax.sampling import guided, placement
from musickv_jax.sampling import inversion as inversion_lib
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling import windows as windows_lib


def check_recording(config: ModelConfig, n_samples: int, settings: WindowSettings) -> None:
  """A recording longer than one window must fit the seconds conditioning (its length is each
  window's seconds_total)."""
  settings.validate(config)
  seconds = n_samples / config.sample_rate
  top = config.conditioner.seconds_max
  if seconds > top + 1e-6:
    raise SettingsError(f"the recording is {seconds:.1f} s long; the model's seconds conditioning reaches "
                        f"{top:g} s: edit a segment of at most {top:g} s ({{field}} / {{end_s}})", field="start_s",
                        mentions=("end_s",))


def check_edit(model: LoadedModel, settings: EditSettings, window_settings: WindowSettings, n_samples: int,
               mesh: placement.Mesh | None = None) -> None:
  """Raises SettingsError, before any work, for a long edit that the long path would refuse:
  settings that do not apply per window, and a memory budget that cannot hold its rows."""
  cfg = model.config
  settings = settings.for_recording(cfg)
  gen = settings.generation
  check_recording(cfg, n_samples, window_settings)
  _check_generation(settings)
  n = len(gen.prompts)
  # the source runs at guidance 1, the edits at the settings' scale
  use_cfg = rows_lib.uses_cfg([gen.guidance_scale], gen.negative_prompt)
  memory.windows_per_batch(model, window_settings, window_settings.layout(cfg, cfg.frames_for_samples(n_samples)),
                           rows_lib.branches(use_cfg) * n, n_samples, n,
                           placement.devices_of(placement.default_mesh(mesh)))


def _check_generation(settings: EditSettings) -> None:
  gen = settings.generation
  if settings.injection_mode != "joint":
    raise SettingsError("a recording longer than one window is edited in the joint {field} (the cached mode "
                        "would hold every step's K/V of every window)", field="injection_mode")
  if gen.audio_end_in_s is not None:
    raise SettingsError("{field} does not apply to a recording longer than one window (each window is conditioned "
                        "on its start and the recording's length); leave it out", field="audio_end_in_s")
  if gen.audio_start_in_s != 0:
    raise SettingsError("{field} does not apply to a recording longer than one window (each window is conditioned "
                        "on its own start); leave it out", field="audio_start_in_s")


def seconds_total(config: ModelConfig, n_samples: int, layout: windows_lib.WindowLayout | None = None) -> float:
  """The seconds conditioning of every window of a recording longer than one window: Stable Audio
  Open's seconds_total, the recording's length (each window a crop of it, conditioned on its start
  too); Stable Audio 3's duration, the window's own length (it has no start to condition on)."""
  if config.variable_length and layout is not None:
    return config.seconds_of_frames(layout.width)
  return n_samples / config.sample_rate


# ----------------------------------------------------------------------------- windows as rows


def window_plans(model: LoadedModel, settings: EditSettings | GenerationSettings, x_init,
                 layout: windows_lib.WindowLayout, total: float, *,
                 source_guidance: float | None = None, local_cond=None) -> list[EditPlan]:
  """One plan per window: the same prompts and rows, each window conditioned on its own start
  (and x_init's and local_cond's frames of that window). Regions are the whole latent's (the
  caller's), not a window's."""
  cfg = model.config
  starts = layout.seconds_start(cfg.vae.hop_length, cfg.sample_rate)
  x_init = np.asarray(x_init)
  if isinstance(settings, EditSettings):
    settings = dataclasses.replace(settings, regions=())

  def window(array, first):
    return None if array is None else np.asarray(array)[..., first:first + layout.width]

  return [build_plan(model, settings, window(x_init, first), source_guidance=source_guidance,
                     seconds=(start, total), check_coverage=False, local_cond=window(local_cond, first))
          for first, start in zip(layout.starts, starts)]


def grouped(plans: Sequence[EditPlan], windows: windows_lib.Windows) -> tuple[guided.GuidedConditioning, guided.KVSteps]:
  """The windows' plans as groups of rows: conditioning (groups, R, ...) with guidance (G * n,),
  and the controls of one group (alike for every group). Padding windows repeat window 0."""
  groups, per_group = windows.groups, windows.per_group
  blocks = [block_of([plans[i] if i < len(plans) else plans[0] for i in range(g * per_group, (g + 1) * per_group)])
            for g in range(groups)]
  cond = guided.join_rows([b.cond for b in blocks], jnp.stack, blocks[0].cond.guidance)
  return cond, blocks[0].kv


def invert_latents(model: LoadedModel, latents, settings: InversionSettings, window_settings: WindowSettings,
                   n_samples: int, *, on_step: common.Listener | None = None,
                   layout: windows_lib.WindowLayout | None = None, mesh: placement.Mesh | None = None) -> np.ndarray:
  """Clean latents (1, C, L) of a long recording -> the latent at sigma_max, one inversion over
  windows, spread over the devices of `mesh` (default: every local device). `layout` overrides
  the settings' windows (tests: a one-window layout)."""
  cfg = model.config
  frames = int(np.shape(latents)[-1])
  if settings.seconds_total is not None and layout is None:
    raise SettingsError("{field} is set per window for a recording longer than one window (its start, the "
                        "recording's length); leave it out", field="seconds_total")
  layout = layout or window_settings.layout(cfg, frames)
  mesh = placement.default_mesh(mesh)
  windows = layout.arrays(memory.windows_per_batch(model, window_settings, layout, 1, n_samples, 1,
                                                   placement.devices_of(mesh)), placement.devices_of(mesh))
  total = (common.recording_seconds(cfg, n_samples, settings.seconds_total) if layout.n_windows == 1
           else seconds_total(cfg, n_samples, layout))
  # the inversion's rows: the description alone, conditional only (guidance 1)
  rows = GenerationSettings(prompts=(settings.prompt,), num_inference_steps=settings.num_inference_steps,
                            guidance_scale=1.0)
  cond, _ = grouped(window_plans(model, rows, latents, layout, total), windows)
  inverted, _ = inversion_lib.invert_in_chunks(
      placement.replicate(model.params.dit, mesh),
      *placement.replicate((cond, jnp.asarray(latents, jnp.float32), settings.plan(cfg, layout.width), windows),
                           mesh), dit_config=cfg.dit, mesh=mesh, on_step=on_step)
  return common.to_host(inverted)


def edit_latents(model: LoadedModel, settings: EditSettings, x_init, window_settings: WindowSettings, n_samples: int,
                 *, source_guidance: float | None = None, on_step: common.Listener | None = None,
                 layout: windows_lib.WindowLayout | None = None, mesh: placement.Mesh | None = None,
                 dit_params=None, reference=None) -> tuple[np.ndarray, EditPlan]:
  """The sampling part of a long edit (joint mode, windows as rows, spread over the devices of
  `mesh`, default every local device): x_init (n, C, L) -> final latents (n, C, L) and the plan of
  the first window (its rows, roles and schedule are every window's). dit_params: the DiT
  parameters already placed on the mesh (default: placed here). reference (1, C, L): the
  recording's latent (FlowEdit's start; pasted back outside the settings' regions)."""
  cfg = model.config
  settings = settings.for_recording(cfg)
  gen = settings.generation
  n = len(gen.prompts)
  if layout is None:
    _check_generation(settings)
  layout = layout or window_settings.layout(cfg, int(np.shape(x_init)[-1]))
  total = (common.recording_seconds(cfg, n_samples, gen.audio_end_in_s) if layout.n_windows == 1
           else seconds_total(cfg, n_samples, layout))
  roles = [row.role for row in edit_rows(n, settings.edit_all, gen.guidance_scale)]
  local = None if reference is None else regions_lib.inpainting_conditioning(cfg, settings, roles, reference)
  plans = window_plans(model, settings, x_init, layout, total, source_guidance=source_guidance, local_cond=local)
  first = plans[0]
  if common.samples_nothing(first.steps):  # SDEdit at level 0: the start is the result
    return np.asarray(x_init), first
  mesh = placement.default_mesh(mesh)
  devices = placement.devices_of(mesh)
  rows_per_window = rows_lib.branches(first.use_cfg) * n
  windows = layout.arrays(memory.windows_per_batch(model, window_settings, layout, rows_per_window, n_samples, n,
                                                   devices), devices)
  cond, kv = grouped(plans, windows)
  noise = None
  if first.step_noise is not None:  # the whole latent's noise (the windows' plans drew theirs for their frames)
    noise = jnp.repeat(common.step_noise(first.seed, first.steps.steps, (1, cfg.dit.io_channels, layout.frames)), n,
                       axis=1)
  flowedit = settings.method == "flowedit"
  # the whole latent's regions and FlowEdit data (the windows' plans have none)
  paste = regions_lib.region_paste(cfg, settings, roles, first.source_index(), first.steps, layout.frames,
                                   clean=None if flowedit else reference, seed=first.seed, step_noise=noise)
  data = flowedit_data(cfg, settings, roles, reference, first.steps) if flowedit else None
  block = guided.RowBlock(cond=cond, x_init=jnp.asarray(x_init), kv=kv, keys=jnp.asarray(first.keys()),
                          sample_ids=jnp.asarray([row.noise_stream for row in first.rows], jnp.int32),
                          step_noise=noise, paste=paste, flowedit=data)
  params = dit_params if dit_params is not None else placement.replicate(model.params.dit, mesh)
  block, steps, windows = placement.replicate((block, first.steps, windows), mesh)
  latents, _ = guided.sample_block_in_chunks(params, block, steps, windows, dit_config=cfg.dit, solver=first.solver,
                                             use_cfg=first.use_cfg, mesh=mesh, on_step=on_step)
  return common.to_host(latents), first
