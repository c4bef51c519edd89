"""Many edits as rows of one jitted sampler call, over every device of a host.

A job is one MusicKV edit (a source and its edits, generated or from an inverted recording) with
its plan (pipeline.plan). A recording longer than the model's window makes a job of its own
(`run_long`: its windows are its rows, pipeline.long_recording). Jobs that share a bucket (steps,
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
from musickv_jax.pipeline.plan import EditPlan, RowBlock, block_of, build_plan, run_block, stack_blocks
from musickv_jax.pipeline.results import SOURCE_GUIDANCE, EditResult, Inversion, edit_result
from musickv_jax.pipeline.settings import EditSettings
from musickv_jax.sampling import guided, placement, sampler


@dataclasses.dataclass
class EditJob:
  """One validated edit, ready to sample: its plan, or (a recording longer than one window) the
  inversion its windows are edited from."""

  id: str
  settings: EditSettings
  plan: EditPlan | None  # None for a long recording (its windows have plans of their own)
  recording: Inversion | None = None  # an edited recording's inversion

  @property
  def is_long(self) -> bool:
    return self.recording is not None and self.recording.windows is not None

  @property
  def n_prompts(self) -> int:
    return len(self.settings.generation.prompts)

  @property
  def n_edits(self) -> int:
    return self.n_prompts - 1 if self.settings.edit_all else 1

  def result(self, model: LoadedModel, latents: np.ndarray, plan: EditPlan | None = None) -> EditResult:
    """The job's result from its final latents (the plan of a long recording's first window)."""
    return edit_result(model, plan or self.plan, self.settings, latents, recording=self.recording)


def plan_job(model: LoadedModel, job_id: str, settings: EditSettings, recording: Inversion | None = None) -> EditJob:
  """A job of a generated source (its initial noise from the seed) or of an inverted recording."""
  settings = dataclasses.replace(settings, injection_mode="joint")  # a batch is one joint run per job
  settings = settings.for_recording(model.config) if recording is not None else settings.for_model(model.config)
  settings.validate(model.config)
  if recording is not None and recording.windows is not None:
    long_recording.check_edit(model, settings, recording.windows, recording.n_samples)
    return EditJob(job_id, settings, None, recording)
  x_init = None
  if recording is not None:
    x_init = np.repeat(recording.inverted, len(settings.generation.prompts), axis=0)
  plan = build_plan(model, settings, x_init, source_guidance=SOURCE_GUIDANCE if recording is not None else None,
                    check_coverage=recording is None)
  return EditJob(job_id, settings, plan, recording)


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


def bucket_of(job: EditJob) -> Bucket:
  gen = job.settings.generation
  return Bucket(gen.num_inference_steps, int(job.plan.x_init.shape[-1]), job.plan.use_cfg, gen.sampler,
                gen.sigma_schedule, float(gen.sigma_min), float(gen.sigma_max))


@dataclasses.dataclass
class Batch:
  bucket: Bucket
  devices: list[list[EditJob]]  # the jobs of each device, in row order
  rows_per_device: int

  @property
  def jobs(self) -> list[EditJob]:
    return [job for device in self.devices for job in device]


def pack(jobs: list[EditJob], rows_per_device: int, n_devices: int) -> list[Batch]:
  """Jobs -> batches: per bucket, each job to the least-filled device with room (see the module)."""
  for job in jobs:
    if job.n_prompts > rows_per_device:
      raise SettingsError(f"job {job.id} has {job.n_prompts} prompts but a device takes {rows_per_device} rows; "
                          "raise {field}", field="rows_per_device")
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
    rows = (2 if batch.bucket.use_cfg else 1) * batch.rows_per_device
    memory.check_rows(model.config, model_bytes, rows, batch.bucket.frames, budget_gib,
                      what=f"a device's batch ({len(batch.jobs)} job(s), {batch.rows_per_device} prompt rows)")


# ----------------------------------------------------------------------------- sampling on a data mesh


@functools.partial(jax.jit, static_argnames=("mesh", "dit_config", "solver", "use_cfg"))
def sample_on_mesh(dit_params, block: RowBlock, steps: sampler.StepPlan, *, mesh: placement.Mesh,
                   dit_config: DiTConfig, solver: str, use_cfg: bool):
  """guided.sample on every device's own rows (the block is the devices' blocks side by side)."""
  def local(params, block: RowBlock, steps):
    latents, _ = guided.sample(params, block.cond, block.x_init, steps, jax.random.wrap_key_data(block.keys),
                               block.kv, block.sample_ids, block.step_noise, dit_config=dit_config, solver=solver,
                               use_cfg=use_cfg)
    return latents

  rows = P(placement.DATA_AXIS)
  spec = RowBlock(cond=guided.GuidedConditioning(rows, rows, rows), x_init=rows,
                  kv=guided.KVSteps(inject_weight=P(None, None, placement.DATA_AXIS), source_index=rows,
                                    injected=None, bypass=P(None, placement.DATA_AXIS), blend_layers=P()),
                  keys=rows, sample_ids=rows,
                  step_noise=None if block.step_noise is None else P(None, placement.DATA_AXIS))
  # check_vma off: the rows are independent by construction, and the per-layer lax.cond of the blend
  # mixes replicated (which layers blend) and per-device (the weights) values
  return jax.shard_map(local, mesh=mesh, in_specs=(P(), spec, P()), out_specs=rows, check_vma=False)(
      dit_params, block, steps)


def run_long(model: LoadedModel, job: EditJob, mesh: placement.Mesh, dit_params) -> tuple[np.ndarray, EditPlan]:
  """A job whose recording is longer than one window: its windows are the rows (in groups sized to
  the memory budget), spread over the mesh's devices. dit_params: replicated on the mesh (see
  placement.replicate). Returns its final latents (n_prompts, C, L) and its first window's plan."""
  inversion = job.recording
  x_init = np.repeat(inversion.inverted, job.n_prompts, axis=0)
  return long_recording.edit_latents(model, job.settings, x_init, inversion.windows, inversion.n_samples,
                                     source_guidance=SOURCE_GUIDANCE, mesh=mesh, dit_params=dit_params)


def run_batch(model: LoadedModel, dit_params, batch: Batch, mesh: placement.Mesh) -> dict[str, np.ndarray]:
  """Samples every job of the batch; returns each job's final latents (n_prompts, C, T).
  dit_params: the DiT parameters replicated on the mesh (see placement.replicate)."""
  template = batch.jobs[0].plan
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


def run_local(model: LoadedModel, batch: Batch) -> dict[str, np.ndarray]:
  """Samples a batch packed for one device (pack(..., n_devices=1)) as one block of rows, a chunk of
  steps at a time, reporting progress to sampler.on_step's listeners between chunks (an
  interactive server's progress bar and cancel point). The rows are not padded: a batch of one job
  computes exactly what a run of that job alone computes (pipeline.plan.run_plan); a batch of
  several equals each job alone up to float32 reassociation between batch sizes (1e-4 relative).
  Returns each job's final latents (n_prompts, C, T)."""
  jobs = batch.jobs
  if len(batch.devices) != 1:
    raise ValueError("run_local samples a batch packed for one device")
  block = block_of([job.plan for job in jobs])
  latents, _ = run_block(model, block, jobs[0].plan)
  latents = common.to_host(latents)
  out, offset = {}, 0
  for job in jobs:
    out[job.id] = latents[offset:offset + job.n_prompts]
    offset += job.n_prompts
  return out
