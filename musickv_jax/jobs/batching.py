"""Many edits as rows of one jitted sampler call, over every device of a host.

A job is one MusicKV edit (a source and its edits, generated or from an inverted recording) with
its plan (pipeline.plan). Some jobs run alone (`EditJob.alone`: a recording longer than the
model's window, whose windows are its rows; the cached injection mode; an edit from an
inversion's K/V). Jobs that share a bucket (steps,
latent frames, CFG on/off, sampler and sigma schedule: the static shape of the program) are packed
into batches of rows_per_device x devices prompt rows:

  * each device gets whole jobs (a job's rows never straddle devices): in manifest order, each job
    goes to the least-filled device with room, else opens the bucket's next batch;
  * a device's rows are the block of its jobs' plans (pipeline.plan.block_of: their rows one after
    the other, each edit pointing at its own job's source row, then padding rows);
  * everything that differs between jobs is data: conditioning, x_T, guidance per row, the
    injection weights, bypassed layers per row, and the stochastic sampler's key per row.

So one program is compiled per bucket, whatever the prompts, seeds, schedules or vital layers.
On D devices the batch is split along the rows with `jax.shard_map` over a 1-D `data` mesh: each
device runs the same single-device program on its own rows (no communication; the parameters are
replicated). A job's latents equal a run of that job alone up to float32 reassociation between
batch sizes (1e-4 relative).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import DiTConfig
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import common, long_recording, memory
from musickv_jax.pipeline.editing import sample_edit
from musickv_jax.pipeline.plan import EditPlan, block_of, build_plan, run_block, run_from_cache, stack_blocks
from musickv_jax.pipeline.recording import inversion_kv_cache, region_reference
from musickv_jax.pipeline.results import EditResult, Recording, edit_result, source_guidance
from musickv_jax.pipeline.settings import EditSettings, WindowSettings
from musickv_jax.sampling import flowedit, guided, placement, regions, sampler
from musickv_jax.sampling import rows as rows_lib
from musickv_jax.sampling.guided import RowBlock


@dataclasses.dataclass
class EditJob:
  """One validated edit, ready to sample: its plan, or (a recording longer than one window) the
  inversion its windows are edited from.

  A job runs alone (`alone`) when it cannot share a batch: a long recording (its windows are its
  rows), the cached injection mode (a recording pass, then an edit pass), an edit from the K/V an
  inversion recorded. Every other job is rows of a batch."""

  id: str
  settings: EditSettings
  plan: EditPlan | None  # None for a long recording (its windows have plans of their own)
  recording: Recording | None = None  # an edited recording: its inversion, or its latent (FlowEdit, SDEdit)
  windows: WindowSettings | None = None  # how a long recording's windows run (batching, memory budget)
  kv_from_inversion: bool = False  # the edits read the K/V the inversion recorded (the source is not rerun)

  @property
  def is_long(self) -> bool:
    return self.recording is not None and self.recording.windows is not None

  @property
  def alone(self) -> bool:
    return self.is_long or self.kv_from_inversion or self.settings.injection_mode == "cached"

  @property
  def n_prompts(self) -> int:
    return len(self.settings.generation.prompts)

  @property
  def steps(self) -> int:
    passes = 2 if self.settings.injection_mode == "cached" and not self.is_long else 1
    return passes * self.settings.generation.num_inference_steps

  @property
  def n_edits(self) -> int:
    return self.n_prompts - 1 if self.settings.edit_all else 1

  def sample_alone(self, model: LoadedModel, *, mesh: placement.Mesh | None = None, dit_params=None,
                   on_step: sampler.Listener | None = None) -> tuple[np.ndarray, EditPlan]:
    """Samples a job that runs alone: (final latents (n, C, T), the plan its result is read with).
    mesh / dit_params: a long recording's windows spread over a data mesh (default: every local
    device), its parameters already placed there."""
    if self.is_long:
      recording = self.recording
      x_init = np.repeat(recording.start, self.n_prompts, axis=0)
      return long_recording.edit_latents(model, self.settings, x_init, recording.windows.running_as(self.windows),
                                         recording.n_samples, source_guidance=source_guidance(self.settings),
                                         mesh=mesh, dit_params=dit_params, on_step=on_step,
                                         reference=region_reference(recording, self.settings))
    if self.kv_from_inversion:
      cache = inversion_kv_cache(self.recording, self.settings)
      return run_from_cache(model, self.plan, cache, on_step=on_step), self.plan
    return sample_edit(model, self.plan, self.settings.injection_mode, on_step=on_step), self.plan

  def result(self, model: LoadedModel, latents: np.ndarray, plan: EditPlan | None = None) -> EditResult:
    """The job's result from its final latents (the plan of a long recording's first window)."""
    return edit_result(model, plan or self.plan, self.settings, latents, recording=self.recording,
                       kv_from_inversion=self.kv_from_inversion)


def plan_job(model: LoadedModel, job_id: str, settings: EditSettings, recording: Recording | None = None, *,
             init_latents=None, step_noise=None, kv_from_inversion: bool = False,
             windows: WindowSettings | None = None) -> EditJob:
  """A job of a generated source (its initial noise from the seed, or init_latents; a stochastic
  sampler's step_noise) or of a recording made ready by its method (inverted, or encoded;
  kv_from_inversion: its edits read the K/V the inversion recorded; windows: how a long
  recording's windows run)."""
  settings = settings.for_recording(model.config) if recording is not None else settings.for_model(model.config)
  settings.validate(model.config)
  if recording is not None and recording.windows is not None:
    long_recording.check_edit(model, settings, recording.windows.running_as(windows), recording.n_samples)
    region_reference(recording, settings)  # refused now if the regions need a latent the job lacks
    return EditJob(job_id, settings, None, recording, windows)
  x_init, reference, seconds = init_latents, None, None
  if recording is not None:
    x_init = np.repeat(recording.start, len(settings.generation.prompts), axis=0)
    reference = region_reference(recording, settings)
    seconds = (settings.generation.audio_start_in_s,
               common.recording_seconds(model.config, recording.n_samples, settings.generation.audio_end_in_s))
  plan = build_plan(model, settings, x_init,
                    source_guidance=source_guidance(settings) if recording is not None else None,
                    check_coverage=recording is None, step_noise=step_noise, seconds=seconds, reference=reference)
  if kv_from_inversion:  # the source is not regenerated: the edits read the inversion's K/V
    inversion_kv_cache(recording, settings)  # refused now if the inversion recorded other K/V
    plan = plan.select(range(1, plan.n))
  return EditJob(job_id, settings, plan, recording, windows, kv_from_inversion)


@dataclasses.dataclass(frozen=True)
class Bucket:
  """What must be equal for jobs to share a compiled program."""

  steps: int
  frames: int
  use_cfg: bool
  sampler: str
  sigma_schedule: str
  sigma_min: float
  sigma_max: float
  start_level: float  # where sampling starts (audio-to-audio / SDEdit; FlowEdit's start)
  method: str  # FlowEdit runs another program than the samplers
  flowedit_samples: int
  paste: str  # how region edits are pasted (sampling.regions.kind)


def bucket_of(job: EditJob) -> Bucket:
  gen, plan = job.settings.generation, job.plan
  flowedit_run = plan.flowedit is not None
  return Bucket(gen.num_inference_steps, int(plan.x_init.shape[-1]), plan.use_cfg, gen.sampler,
                gen.sigma_schedule, float(gen.sigma_min), float(gen.sigma_max), float(plan.steps.sigma[0]),
                "flowedit" if flowedit_run else "sampler", plan.flowedit.samples if flowedit_run else 0,
                regions.kind(plan.paste))


@dataclasses.dataclass
class Batch:
  bucket: Bucket
  devices: list[list[EditJob]]  # the jobs of each device, in row order
  rows_per_device: int

  @property
  def jobs(self) -> list[EditJob]:
    return [job for device in self.devices for job in device]


def too_many_prompts(job: EditJob, rows_per_device: int) -> SettingsError | None:
  """Why a job cannot be rows of a device's batch (more prompts than the device's rows), or None."""
  if job.alone or job.n_prompts <= rows_per_device:
    return None
  return SettingsError(f"{job.n_prompts} prompts do not fit the {rows_per_device} rows of a device; raise {{field}}",
                       field="rows_per_device")


def pack(jobs: list[EditJob], rows_per_device: int, n_devices: int) -> list[Batch]:
  """Jobs that share batches -> batches: per bucket, each job to the least-filled device with room
  (see the module)."""
  for job in jobs:
    problem = too_many_prompts(job, rows_per_device)
    if problem is not None:
      raise problem
  batches: list[Batch] = []
  open_batches: dict[Bucket, Batch] = {}
  for job in jobs:
    bucket = bucket_of(job)
    batch = open_batches.get(bucket)
    placed = False
    if batch is not None:  # the least-filled device with room: work spreads over the devices
      used = [sum(j.n_prompts for j in device) for device in batch.devices]
      fits = [d for d in range(n_devices) if used[d] + job.n_prompts <= rows_per_device]
      if fits:
        batch.devices[min(fits, key=lambda d: used[d])].append(job)
        placed = True
    if not placed:
      batch = Batch(bucket, [[] for _ in range(n_devices)], rows_per_device)
      batch.devices[0].append(job)
      batches.append(batch)
      open_batches[bucket] = batch
  return batches


def check_memory(model: LoadedModel, batches: list[Batch], budget_gib: float | None) -> None:
  """Refuses (SettingsError, one line) before any sampling when a device's rows of a batch do not fit
  the memory budget (None: the device's memory), by the estimate of pipeline.memory."""
  model_bytes = memory.params_bytes(model)
  for batch in batches:
    rows = rows_lib.branches(batch.bucket.use_cfg) * batch.rows_per_device
    memory.check_rows(model.config, model_bytes, rows, batch.bucket.frames, budget_gib,
                      what=f"a device's batch ({len(batch.jobs)} job(s), {batch.rows_per_device} prompt rows)")


# ----------------------------------------------------------------------------- sampling on a data mesh


@functools.partial(jax.jit, static_argnames=("mesh", "dit_config", "solver", "use_cfg"))
def sample_on_mesh(dit_params, block: RowBlock, steps: sampler.StepPlan, *, mesh: placement.Mesh,
                   dit_config: DiTConfig, solver: str, use_cfg: bool):
  """guided.sample on every device's own rows (the block is the devices' blocks side by side)."""
  def local(params, block: RowBlock, steps):
    latents, _ = guided.sample_block(params, block, steps, dit_config=dit_config, solver=solver, use_cfg=use_cfg)
    return latents

  rows = P(placement.DATA_AXIS)
  steps_rows = P(None, placement.DATA_AXIS)  # (steps, rows, ...)
  paste = block.paste
  if paste is not None:
    clean = paste.clean is not None
    paste = regions.Paste(keep=rows, source_row=rows, from_clean=rows if clean else None, clean=rows if clean else None,
                          noise=steps_rows if clean else None, clean_scale=P() if clean else None,
                          noise_scale=P() if clean else None)
  data = None if block.flowedit is None else flowedit.FlowEditData(
      reference=rows, source_row=rows, noise=P(None, None, placement.DATA_AXIS), clean_scale=P())
  spec = RowBlock(cond=jax.tree.map(lambda _: rows, block.cond), x_init=rows,
                  kv=guided.KVSteps(inject_weight=P(None, None, placement.DATA_AXIS), source_index=rows,
                                    injected=None, bypass=P(None, placement.DATA_AXIS), blend_layers=P()),
                  keys=rows, sample_ids=rows, step_noise=None if block.step_noise is None else steps_rows,
                  paste=paste, flowedit=data)
  # check_vma off: the rows are independent by construction, and the per-layer lax.cond of the blend
  # mixes replicated (which layers blend) and per-device (the weights) values
  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, P()), out_specs=rows, check_vma=False)(
      dit_params, block, steps)


def run_batch(model: LoadedModel, dit_params, batch: Batch, mesh: placement.Mesh) -> dict[str, np.ndarray]:
  """Samples every job of the batch on a data mesh, each device's block padded to its rows (one
  program per bucket); returns each job's final latents (n_prompts, C, T). dit_params: the DiT
  parameters replicated on the mesh (see placement.replicate). One call: no progress between
  steps (a mesh program's chunks would each wait for the slowest device)."""
  template = batch.jobs[0].plan
  if common.samples_nothing(template.steps):  # started at level 0 (SDEdit): each start is its result
    return {job.id: np.asarray(job.plan.x_init) for job in batch.jobs}
  blocks = [block_of([job.plan for job in jobs] or [template.select([0])], batch.rows_per_device, dense=True)
            for jobs in batch.devices]
  # on the host: the program places each device's rows itself (the conditioning was computed on one device)
  block = jax.device_get(stack_blocks(blocks))
  latents = sample_on_mesh(dit_params, block, template.steps, mesh=mesh,
                           dit_config=model.config.dit, solver=template.solver, use_cfg=template.use_cfg)
  latents = common.to_host(latents)
  out = {}
  for d, jobs in enumerate(batch.devices):
    offset = d * batch.rows_per_device
    for job in jobs:
      out[job.id] = latents[offset:offset + job.n_prompts]
      offset += job.n_prompts
  return out


def run_local(model: LoadedModel, batch: Batch, *, on_step: sampler.Listener | None = None) -> dict[str, np.ndarray]:
  """Samples a batch packed for one device (pack(..., n_devices=1)) as one block of rows, a chunk of
  steps at a time, on_step called between chunks (an interactive server's progress bar and cancel
  point). The rows are not padded: a batch of one job computes exactly what a run of that job
  alone computes (pipeline.plan.run_plan); a batch of several equals each job alone up to float32
  reassociation between batch sizes (1e-4 relative). Returns each job's final latents
  (n_prompts, C, T)."""
  jobs = batch.jobs
  if len(batch.devices) != 1:
    raise ValueError("run_local samples a batch packed for one device")
  block = block_of([job.plan for job in jobs])
  latents, _ = run_block(model, block, jobs[0].plan, on_step=on_step)
  latents = common.to_host(latents)
  out, offset = {}, 0
  for job in jobs:
    out[job.id] = latents[offset:offset + job.n_prompts]
    offset += job.n_prompts
  return out
