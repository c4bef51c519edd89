"""One sampler run, planned: everything the sampler needs, decided in one place.

`build_plan(model, settings, ...)` turns the settings of a generation, an edit of a generated
source or an edit of a recording into an `EditPlan`: its prompt rows (role, prompt, guidance,
the source row an edit takes its K/V from, the schedule column it follows, the layers it
bypasses, its noise stream), whether classifier-free guidance runs, the conditioning of every
row, the initial latents, the step plan and the injection schedule. Every path consumes plans:

  generation, edits (joint)      one plan, one block of rows
  edits (cached)                 the plan's source row, recorded; then the other rows from the cache
  long recordings                one plan per window (its own seconds conditioning); a group of
                                 windows is the block of those plans' rows
  batch jobs                     each device's block is the rows of several jobs' plans, padded
  schedule optimisation, probe   one plan; its injection weights recomputed from a traced schedule

`block_of(plans)` lays the rows of one or more plans out as one batch (the DiT's rows follow
sampling.rows): the only place rows are concatenated, offset and padded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import SettingsError
from musickv_jax.models.dit import KVCache
from musickv_jax.pipeline import common, memory
from musickv_jax.pipeline import regions as regions_lib
from musickv_jax.pipeline.conditioning import guided_conditioning
from musickv_jax.pipeline.flowedit import flowedit_data
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings
from musickv_jax.sampling import flowedit as flowedit_lib
from musickv_jax.sampling import guided, regions, solvers
from musickv_jax.sampling import kv as kv_lib
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling.guided import RowBlock
from musickv_jax.sampling.rows import Role
from musickv_jax.sampling.sampler import Listener, StepPlan

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PlanRow:
  """One prompt row of a sampler run."""

  role: Role
  prompt: str
  guidance: float
  source: int | None = None  # an edit: the row (of its plan) whose K/V it takes; None: none, or a cache
  column: int = -1  # an edit: the schedule column it follows (-1: takes nothing)
  skip_layers: tuple[int, ...] = ()  # layers whose self-attention this row bypasses
  noise_stream: int = 0  # the stochastic sampler's noise stream of this row (its index in its job)


@dataclasses.dataclass(frozen=True)
class EditPlan:
  """Everything one sampler run of one job needs. Generation is a plan without edits.

  conditioning: the rows as the DiT sees them ([branch][row], sampling.rows), guidance (n,).
  x_init (n, C, T) at the first step's noise level. schedule: (steps, n_vital, n_edits) or None.
  step_noise (steps, n, C, T): the noise a stochastic sampler adds at each step (ping-pong: drawn
  once from the seed and shared by every prompt, so sources and edits see the same noise), or
  None (the SDE sampler then draws it from the key, a stream per row). paste: region edits
  (sampling.regions) or None; flowedit: FlowEdit's data (sampling.flowedit: the rows are edited
  by FlowEdit from their references instead of sampled) or None."""

  rows: tuple[PlanRow, ...]
  use_cfg: bool
  conditioning: guided.GuidedConditioning
  x_init: Array
  steps: StepPlan
  solver: str
  seed: int
  depth: int
  key_data: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((2,), np.uint32))  # stochastic samplers
  vital_layers: tuple[int, ...] = ()
  schedule: Array | None = None
  step_noise: Array | None = None
  paste: regions.Paste | None = None
  flowedit: flowedit_lib.FlowEditData | None = None

  @property
  def n(self) -> int:
    return len(self.rows)

  @property
  def prompts(self) -> list[str]:
    return [row.prompt for row in self.rows]

  @property
  def roles(self) -> list[str]:
    return [row.role.value for row in self.rows]

  @property
  def n_edits(self) -> int:
    return sum(row.role is Role.EDIT for row in self.rows)

  def weights(self, schedule=None) -> Array:
    """(steps, depth, n) the blend weight of every row (0 but at edits in the vital layers), from
    the plan's schedule or a given one (traced: the schedule optimiser's gradient flows through)."""
    schedule = self.schedule if schedule is None else schedule
    columns = [row.column for row in self.rows]
    if schedule is None or not self.vital_layers:
      return jnp.zeros((self.steps.steps, self.depth, self.n), jnp.float32)
    return kv_lib.injection_weights(kv_lib.per_edit(schedule, max(self.n_edits, 1)), self.vital_layers, columns,
                                    self.depth)

  def source_index(self) -> np.ndarray:
    """(n,) the row each row takes K/V from (itself where it takes none)."""
    return np.asarray([i if row.source is None else row.source for i, row in enumerate(self.rows)], np.int32)

  def keys(self) -> np.ndarray:
    """(n, 2) uint32: the key data of each row's stochastic-sampler key (the plan's seed)."""
    return np.repeat(np.asarray(self.key_data, np.uint32)[None], self.n, axis=0)

  def select(self, indices: Sequence[int]) -> "EditPlan":
    """The plan of some of its rows (keeping their noise streams). An edit whose source is left out
    keeps its column: it reads its source from a recorded cache (the cached mode)."""
    indices = list(indices)
    position = {old: new for new, old in enumerate(indices)}
    rows = tuple(dataclasses.replace(self.rows[i], source=position.get(self.rows[i].source)) for i in indices)
    dit_rows = np.concatenate([b * self.n + np.asarray(indices, np.int32)
                               for b in range(rows_lib.branches(self.use_cfg))])
    cond = self.conditioning
    conditioning = cond.map_rows(lambda rows: jnp.take(rows, dit_rows, axis=0),
                                 guidance=jnp.take(cond.guidance, jnp.asarray(indices, jnp.int32), axis=0))
    noise = None if self.step_noise is None else jnp.take(self.step_noise, jnp.asarray(indices, jnp.int32), axis=1)
    if self.flowedit is not None:
      raise ValueError("FlowEdit's rows run together (each edit's direction is compared with its source row's)")
    return dataclasses.replace(self, rows=rows, conditioning=conditioning, step_noise=noise,
                               x_init=jnp.take(jnp.asarray(self.x_init), jnp.asarray(indices, jnp.int32), axis=0),
                               paste=None if self.paste is None else regions.select(self.paste, indices))


# ----------------------------------------------------------------------------- building a plan


def edit_rows(n_prompts: int, edit_all: bool, guidance: float, source_guidance: float | None = None,
              skip_layers: tuple[int, ...] = ()) -> tuple[PlanRow, ...]:
  """The MusicKV convention: prompt 0 is the source; the edits are prompt 1 (the reference) or
  every prompt after the first (edit_all); the rest are generated plainly."""
  rows = [PlanRow(Role.SOURCE, "", guidance if source_guidance is None else source_guidance,
                  skip_layers=skip_layers, noise_stream=0)]
  column = 0
  for p in range(1, n_prompts):
    if edit_all or p == 1:
      rows.append(PlanRow(Role.EDIT, "", guidance, source=0, column=column, skip_layers=skip_layers, noise_stream=p))
      column += 1
    else:
      rows.append(PlanRow(Role.PLAIN, "", guidance, skip_layers=skip_layers, noise_stream=p))
  return tuple(rows)


def build_plan(model: LoadedModel, settings: EditSettings | GenerationSettings, x_init=None, *,
               source_guidance: float | None = None, seconds: tuple[float, float] | None = None,
               check_coverage: bool = True, step_noise=None, local_cond=None, reference=None) -> EditPlan:
  """The plan of a generation (GenerationSettings: every prompt plain) or an edit (EditSettings).

  x_init (n, C, T): the exact initial latents, used as given (an inverted recording, a noised one,
  --init_latents); None: drawn from the seed (one draw shared by every prompt of an edit, as the
  reference; one per prompt of a generation). source_guidance: the source row's own guidance (a
  recording's reconstruction runs at 1). seconds: (seconds_start, seconds_total) conditioning
  instead of the settings' (a window of a long recording). local_cond (n, C + 1, T): the inpainting
  conditioning of each prompt row (Stable Audio 3: [mask, kept latents * mask]). step_noise
  (steps, 1, C, T): a stochastic sampler's noise, shared by every prompt (default for ping-pong:
  drawn from the seed). reference (1, C, T): the clean latent of the recording an edit changes:
  FlowEdit's starting point (its x_init), and outside the settings' regions what is pasted back
  (without it, a region is pasted from the source row). Settings left open take the model's
  defaults; they are validated first."""
  cfg = model.config
  settings = settings.for_model(cfg)
  editing = isinstance(settings, EditSettings)
  if editing:
    gen = settings.generation
    schedule = jnp.asarray(settings.validate(cfg))
    rows = edit_rows(len(gen.prompts), settings.edit_all, gen.guidance_scale, source_guidance,
                     tuple(settings.skip_layers))
    vital = tuple(settings.vital_layers)
  else:
    gen, schedule, vital = settings, None, ()
    gen.validate(cfg)
    rows = tuple(PlanRow(Role.PLAIN, "", gen.guidance_scale, noise_stream=p) for p in range(len(gen.prompts)))
  rows = tuple(dataclasses.replace(row, prompt=prompt) for row, prompt in zip(rows, gen.prompts))
  n = len(rows)
  flowedit = editing and settings.method == "flowedit"
  if flowedit and reference is None and x_init is None:
    raise SettingsError("{field} flowedit edits a recording's latent; give the recording", field="method")
  if flowedit:
    gen = dataclasses.replace(gen, init_noise_level=settings.flowedit_start)  # its schedule starts there
    if reference is not None:
      x_init = np.repeat(np.asarray(reference, np.float32), n, axis=0)
  guidance = np.asarray([row.guidance for row in rows], np.float32)
  use_cfg = rows_lib.uses_cfg(guidance, gen.negative_prompt)
  # before anything is allocated: the run must fit the device (its rows, a cached edit's K/V)
  memory.check_run(model, settings, int(np.shape(x_init)[-1]) if x_init is not None else common.latent_frames(gen, cfg),
                   use_cfg)
  if x_init is not None:
    x_init = jnp.asarray(common.check_init_latents(x_init, n, gen, cfg, require_coverage=check_coverage))
  elif schedule is not None:
    x_init = common.shared_initial_latents(gen, cfg, n, common.latent_frames(gen, cfg))
  else:
    x_init = common.initial_latents(gen, cfg, n, common.latent_frames(gen, cfg))
  start, total = seconds if seconds is not None else (gen.audio_start_in_s, gen.resolved_end(cfg))
  conditioning = guided_conditioning(model, gen.prompts, negative_prompt=gen.negative_prompt, seconds_start=start,
                                     seconds_total=total, guidance=guidance, use_cfg=use_cfg)
  frames = int(x_init.shape[-1])
  roles = [row.role for row in rows]
  if local_cond is None and editing and reference is not None:
    local_cond = regions_lib.inpainting_conditioning(cfg, settings, roles, reference)
  if local_cond is not None:
    conditioning = conditioning.replace(local_cond=rows_lib.to_dit_rows(jnp.asarray(local_cond, jnp.float32), use_cfg))
  noise = None if flowedit else _step_noise(gen, cfg, n, frames, step_noise)
  steps = common.step_plan(gen, cfg, frames)
  source_index = np.asarray([i if row.source is None else row.source for i, row in enumerate(rows)], np.int32)
  paste = data = None
  if editing:
    data = flowedit_data(cfg, settings, roles, reference, steps) if flowedit and reference is not None else None
    paste = regions_lib.region_paste(cfg, settings, roles, source_index, steps, frames,
                                     clean=None if flowedit else reference, seed=gen.seed, step_noise=noise)
  return EditPlan(rows=rows, use_cfg=use_cfg, conditioning=conditioning, x_init=x_init, steps=steps,
                  solver=gen.sampler, seed=gen.seed, depth=cfg.dit.depth,
                  key_data=np.asarray(jax.random.key_data(common.sde_key(gen.seed))), vital_layers=vital,
                  schedule=schedule, step_noise=noise, paste=paste, flowedit=data)


def _step_noise(gen: GenerationSettings, config, n: int, frames: int, given) -> Array | None:
  """The (steps, n, C, T) step noise of a run: given, or drawn from the seed for ping-pong (shared
  by every prompt); None for the SDE sampler's key-drawn streams and for deterministic samplers."""
  steps = gen.num_inference_steps
  if given is not None:
    if gen.sampler not in solvers.STOCHASTIC:
      raise SettingsError(f"{{field}} is the noise of a stochastic sampler ({', '.join(solvers.STOCHASTIC)}); the "
                          f"{gen.sampler} sampler adds none", field="step_noise", mentions=("sampler",))
    shared = jnp.asarray(common.check_step_noise(given, steps, frames, config))
  elif gen.sampler == "pingpong":
    shared = common.step_noise(gen.seed, steps, (1, config.dit.io_channels, frames))
  else:
    return None
  return jnp.repeat(shared, n, axis=1)


# ----------------------------------------------------------------------------- rows of a batch


def block_of(plans: Sequence[EditPlan], rows: int | None = None, weights: Sequence[Array] | None = None, *,
             dense: bool = False) -> RowBlock:
  """The rows of `plans` one after the other as one batch, padded to `rows` prompt rows (padding:
  a copy of the first plan's first row at guidance 1, taking nothing; computed and dropped). An
  edit's source index is offset to its plan's place. weights: each plan's (steps, depth, n) blend
  weights (default: plan.weights(); traced ones keep the gradient). The plans must agree on CFG.
  dense: every control as an array even where no row uses it (one program shape for every batch)."""
  use_cfg = plans[0].use_cfg
  if any(plan.use_cfg != use_cfg for plan in plans):
    raise ValueError("the plans of one batch must agree on whether CFG runs")
  weights = [plan.weights() for plan in plans] if weights is None else list(weights)
  total = sum(plan.n for plan in plans)
  padding = 0 if rows is None else rows - total
  if padding < 0:
    raise ValueError(f"{total} rows do not fit a block of {rows}")
  first = plans[0]
  branches = rows_lib.branches(use_cfg)

  def branch_rows(array: Array, plan: EditPlan, branch: int) -> Array:
    return array[branch * plan.n:(branch + 1) * plan.n]

  def pad(array: Array) -> list[Array]:
    return [jnp.repeat(array[:1], padding, axis=0)] if padding else []

  def dit_rows(name: str) -> Array:  # [branch][plan rows..., padding]
    parts = []
    for branch in range(branches):
      parts += [branch_rows(getattr(plan.conditioning, name), plan, branch) for plan in plans]
      parts += pad(branch_rows(getattr(first.conditioning, name), first, branch))
    return jnp.concatenate(parts)

  if any(plan.conditioning.per_row().keys() != first.conditioning.per_row().keys() for plan in plans):
    raise ValueError("the plans of one batch must have the same conditioning fields (one model family)")

  offsets = np.cumsum([0] + [plan.n for plan in plans])
  source = np.concatenate([plan.source_index() + offset for plan, offset in zip(plans, offsets)]
                          + [np.arange(total, total + padding, dtype=np.int32)])
  guidance = jnp.concatenate([plan.conditioning.guidance for plan in plans] + [jnp.ones((padding,), jnp.float32)])
  skips = [row.skip_layers for plan in plans for row in plan.rows] + [()] * padding
  blend = sorted({layer for plan in plans if plan.n_edits for layer in plan.vital_layers})
  kv = guided.KVSteps()  # only what the rows use: a plain generation's program has no blend and no bypass
  if blend or dense:
    steps = first.steps.steps
    row_weights = jnp.concatenate(list(weights) + [jnp.zeros((steps, first.depth, padding), weights[0].dtype)], axis=2)
    kv = kv_lib.joint_controls(row_weights, source, use_cfg, blend, first.depth)
  if any(skips) or dense:
    kv = dataclasses.replace(kv, bypass=jnp.asarray(rows_lib.to_dit_rows(kv_lib.bypass_rows(skips, first.depth),
                                                                         use_cfg, axis=1)))
  x_init = jnp.concatenate([jnp.asarray(plan.x_init) for plan in plans] + pad(jnp.asarray(first.x_init)))
  keys = np.concatenate([plan.keys() for plan in plans] + [np.zeros((padding, 2), np.uint32)])
  sample_ids = np.asarray([row.noise_stream for plan in plans for row in plan.rows] + [0] * padding, np.int32)
  noise = None
  if any(plan.step_noise is not None for plan in plans):
    if any(plan.step_noise is None for plan in plans):
      raise ValueError("the plans of one batch must agree on whether their sampler's step noise is given")
    noise = jnp.concatenate([plan.step_noise for plan in plans] + [jnp.zeros_like(first.step_noise[:, :1])] * padding,
                            axis=1)
  cond = first.conditioning.replace(**{name: dit_rows(name) for name in first.conditioning.per_row()},
                                    guidance=guidance)
  if len({regions.kind(plan.paste) for plan in plans}) > 1 or len({plan.flowedit is None for plan in plans}) > 1:
    raise ValueError("the plans of one batch must agree on region edits and on FlowEdit (their program's shape)")
  paste = None if first.paste is None else regions.join([plan.paste for plan in plans], padding)
  data = None if first.flowedit is None else flowedit_lib.join([plan.flowedit for plan in plans], padding)
  return RowBlock(cond=cond, x_init=x_init, kv=kv, keys=jnp.asarray(keys), sample_ids=jnp.asarray(sample_ids),
                  step_noise=noise, paste=paste, flowedit=data)


def stack_blocks(blocks: Sequence[RowBlock]) -> RowBlock:
  """Blocks side by side as the rows of one call whose devices each run one block (source indices
  stay local to their block: a device sees only its own rows)."""
  def cat(*arrays, axis: int = 0):
    return jnp.concatenate(arrays, axis=axis)

  kv = guided.KVSteps(inject_weight=cat(*[b.kv.inject_weight for b in blocks], axis=2),
                      source_index=cat(*[b.kv.source_index for b in blocks]),
                      bypass=cat(*[b.kv.bypass for b in blocks], axis=1),
                      blend_layers=jnp.any(jnp.stack([b.kv.blend_layers for b in blocks]), axis=0))
  cond = guided.join_rows([b.cond for b in blocks], lambda arrays: cat(*arrays),
                          cat(*[b.cond.guidance for b in blocks]))
  noise = None if blocks[0].step_noise is None else cat(*[b.step_noise for b in blocks], axis=1)
  paste = None if blocks[0].paste is None else regions.side_by_side([b.paste for b in blocks])
  data = None if blocks[0].flowedit is None else flowedit_lib.side_by_side([b.flowedit for b in blocks])
  return RowBlock(cond=cond, x_init=cat(*[b.x_init for b in blocks]), kv=kv, keys=cat(*[b.keys for b in blocks]),
                  sample_ids=cat(*[b.sample_ids for b in blocks]), step_noise=noise, paste=paste, flowedit=data)


# ----------------------------------------------------------------------------- running a plan


def run_block(model: LoadedModel, block: RowBlock, plan: EditPlan, *, record_layers: tuple[int, ...] = (),
              dit_params=None, on_step: Listener | None = None) -> tuple[Array, KVCache | None]:
  """Samples a block (the step plan, solver and CFG setting of `plan`, a plan of the block), a chunk
  of steps at a time, on_step called between chunks; returns (latents (n, C, T) on the device,
  recorded K/V or None)."""
  if common.samples_nothing(plan.steps):  # started at level 0 (SDEdit, audio-to-audio): the start is the result
    return block.x_init, None
  return guided.sample_block_in_chunks(model.params.dit if dit_params is None else dit_params, block, plan.steps,
                                       dit_config=model.config.dit, solver=plan.solver, use_cfg=plan.use_cfg,
                                       record_layers=record_layers, on_step=on_step)


def run_plan(model: LoadedModel, plan: EditPlan, *, record_layers: tuple[int, ...] = (),
             on_step: Listener | None = None) -> tuple[np.ndarray, KVCache | None]:
  """Samples one plan (the joint mode: sources and edits as rows of one batch): (latents, recorded)."""
  latents, recorded = run_block(model, block_of([plan]), plan, record_layers=record_layers, on_step=on_step)
  return common.to_host(latents), recorded


def run_from_cache(model: LoadedModel, plan: EditPlan, cache: KVCache, *,
                   on_step: Listener | None = None) -> np.ndarray:
  """Samples a plan whose edits take their source's K/V from a recorded cache (the cached mode;
  k, v (steps, n_layers, source rows, S, H, D)): latents (n, C, T)."""
  block = block_of([plan], dense=True)
  kv = dataclasses.replace(block.kv, injected=cache,
                           source_index=jnp.asarray(kv_lib.cache_source_index(plan.n, plan.use_cfg, cache.k.shape[2])),
                           blend_layers=jnp.asarray(kv_lib.layer_mask(cache.layers, plan.depth)))
  if not any(row.skip_layers for row in plan.rows):
    kv = dataclasses.replace(kv, bypass=None)
  latents, _ = run_block(model, block.replace(kv=kv), plan, on_step=on_step)
  return common.to_host(latents)
