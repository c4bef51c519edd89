"""Many edits as rows of one jitted sampler call, over every device of a host.

A job is one MusicKV edit (a source and its edits, generated or from an inverted recording).
A recording longer than the model's window makes a job of its own (`run_long`: its windows are
its rows, pipeline.long_recording). Jobs that share a bucket (steps, latent frames, CFG on/off,
sampler and sigma schedule: the static shape of the program) are packed into batches of
rows_per_device x devices prompt rows:

  * each device gets whole jobs (a job's rows never straddle devices): in manifest order, each job
    goes to the least-filled device with room, else opens the bucket's next batch;
  * a device's rows are its jobs' prompts one after the other, then padding rows (a copy of the
    first row, guidance 1, no injection) up to rows_per_device; padding is computed and dropped;
  * everything that differs between jobs is data: conditioning, x_T, guidance per row, the
    injection weights (steps, depth, rows) with each edit pointing at its own job's source row,
    bypassed layers per row, and the SDE noise key per row.

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
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.config import DiTConfig
from musickv_jax.editing import injection
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import common
from musickv_jax.pipeline import long_recording
from musickv_jax.pipeline.conditioning import guided_conditioning
from musickv_jax.pipeline.recording import Inversion
from musickv_jax.pipeline.settings import EditSettings
from musickv_jax.sampling import guided, sampler

DATA_AXIS = "data"


@dataclasses.dataclass
class EditJob:
  """One validated edit, ready to sample."""

  id: str
  settings: EditSettings
  schedule: np.ndarray  # validated weights, (steps, n_vital) or (steps, n_vital, n_edits)
  x_init: np.ndarray  # (n, C, T)
  guidance: np.ndarray  # (n,) per prompt (a recording's source runs at 1)
  long_recording: Inversion | None = None  # a recording longer than one window: run alone, over windows

  @property
  def is_long(self) -> bool:
    return self.long_recording is not None

  @property
  def n_prompts(self) -> int:
    return len(self.settings.generation.prompts)

  @property
  def use_cfg(self) -> bool:
    return bool(np.any(self.guidance != 1.0)) or self.settings.generation.negative_prompt is not None


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
  return Bucket(gen.num_inference_steps, int(job.x_init.shape[-1]), job.use_cfg, gen.sampler, gen.sigma_schedule,
                float(gen.sigma_min), float(gen.sigma_max))


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


# ----------------------------------------------------------------------------- building a batch's arrays


@dataclasses.dataclass
class _Block:
  """One device's rows (R = rows_per_device prompts; the DiT sees 2R rows with CFG)."""

  x_init: np.ndarray  # (R, C, T)
  cross_tokens: np.ndarray  # (2R or R, N, D)
  global_cond: np.ndarray
  guidance: np.ndarray  # (R,)
  weights: np.ndarray  # (steps, depth, 2R or R)
  source_index: np.ndarray  # (2R or R,), indices within the block
  bypass: np.ndarray  # (depth, 2R or R)
  keys: np.ndarray  # (R, 2) uint32 key data: each row's SDE key
  sample_ids: np.ndarray  # (R,)
  slots: list[tuple[EditJob, int]]  # each job and its first prompt row


def _conditioning(model: LoadedModel, job: EditJob, use_cfg: bool) -> tuple[np.ndarray, np.ndarray]:
  gen = job.settings.generation
  cond = guided_conditioning(model, gen.prompts, negative_prompt=gen.negative_prompt,
                             seconds_start=gen.audio_start_in_s, seconds_total=gen.resolved_end(model.config),
                             guidance=job.guidance, use_cfg=use_cfg)
  return np.asarray(cond.cross_tokens), np.asarray(cond.global_cond)


def _block(jobs: list[EditJob], conds: dict, rows: int, bucket: Bucket, depth: int, template: EditJob) -> _Block:
  """One device's arrays. Rows without a job (padding, or a device with no job at all) copy the
  template job's first row: finite, harmless, and dropped."""
  branches = 2 if bucket.use_cfg else 1
  tokens0, vectors0 = conds[template.id]
  n0 = template.n_prompts
  x_init = np.repeat(template.x_init[:1], rows, axis=0).astype(np.float32)
  cross = np.concatenate([np.repeat(tokens0[b * n0:b * n0 + 1], rows, axis=0) for b in range(branches)])
  glob = np.concatenate([np.repeat(vectors0[b * n0:b * n0 + 1], rows, axis=0) for b in range(branches)])
  guidance = np.ones((rows,), np.float32)
  weights = np.zeros((bucket.steps, depth, branches * rows), np.float32)
  source_index = np.arange(branches * rows, dtype=np.int32)
  bypass = np.zeros((depth, branches * rows), bool)
  keys = np.zeros((rows, 2), np.uint32)
  sample_ids = np.zeros((rows,), np.int32)
  slots, offset = [], 0
  for job in jobs:
    n = job.n_prompts
    tokens, vectors = conds[job.id]
    layout = injection.EditLayout.reference(n, job.settings.edit_all, bucket.use_cfg)
    job_weights = np.asarray(injection.expand_weights(job.schedule, tuple(job.settings.vital_layers), depth, layout))
    local_source = layout.source_index()
    block_row = lambda job_row: (job_row // n) * rows + offset + job_row % n  # noqa: E731
    for job_row in range(branches * n):
      row = block_row(job_row)
      cross[row], glob[row] = tokens[job_row], vectors[job_row]
      weights[:, :, row] = job_weights[:, :, job_row]
      source_index[row] = block_row(int(local_source[job_row]))
      bypass[list(job.settings.skip_layers), row] = True
    x_init[offset:offset + n] = job.x_init
    guidance[offset:offset + n] = job.guidance
    keys[offset:offset + n] = np.asarray(jax.random.key_data(common.sde_key(job.settings.generation.seed)))
    sample_ids[offset:offset + n] = np.arange(n)
    slots.append((job, offset))
    offset += n
  return _Block(x_init, cross, glob, guidance, weights, source_index, bypass, keys, sample_ids, slots)


# ----------------------------------------------------------------------------- sampling on a data mesh


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named `data` over the given devices (default: every local device). A second,
  `model` axis for sharding parameters would join here."""
  devices = list(devices if devices is not None else jax.local_devices())
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree, mesh: jax.sharding.Mesh):
  """Parameters, replicated on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


@functools.partial(jax.jit, static_argnames=("mesh", "dit_config", "solver", "use_cfg"))
def sample_on_mesh(dit_params, cond: guided.GuidedConditioning, x_init, plan: sampler.StepPlan, key_data,
                   kv: guided.KVSteps, sample_ids, *, mesh: jax.sharding.Mesh, dit_config: DiTConfig, solver: str,
                   use_cfg: bool):
  """guided.sample on every device's own rows (arrays are the devices' blocks, concatenated)."""
  def local(params, cond, x_init, plan, key_data, kv, sample_ids):
    keys = jax.random.wrap_key_data(key_data)
    latents, _ = guided.sample(params, cond, x_init, plan, keys, kv, sample_ids, dit_config=dit_config,
                               solver=solver, use_cfg=use_cfg)
    return latents

  rows = P(DATA_AXIS)
  specs = (P(), guided.GuidedConditioning(rows, rows, rows), rows, P(), rows,
           guided.KVSteps(inject_weight=P(None, None, DATA_AXIS), source_index=rows, injected=None,
                          bypass=P(None, DATA_AXIS), blend_layers=P()), rows)
  # check_vma off: the rows are independent by construction, and the per-layer lax.cond of the blend
  # mixes replicated (which layers blend) and per-device (the weights) values
  return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=rows, check_vma=False)(
      dit_params, cond, x_init, plan, key_data, kv, sample_ids)


def run_long(model: LoadedModel, job: EditJob, mesh: jax.sharding.Mesh, dit_params) -> np.ndarray:
  """A job whose recording is longer than one window: its windows are the rows (in groups sized to
  the memory budget), spread over the mesh's devices. dit_params: replicated on the mesh (see
  `replicate`). Returns its final latents (n_prompts, C, L)."""
  inversion = job.long_recording
  latents, _ = long_recording.edit_latents(model, job.settings, job.schedule, job.x_init, job.guidance,
                                           inversion.windows, inversion.n_samples, mesh=mesh, dit_params=dit_params)
  return latents


def run_batch(model: LoadedModel, dit_params, batch: Batch, mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """Samples every job of the batch; returns each job's final latents (n_prompts, C, T).
  dit_params: the DiT parameters replicated on the mesh (see `replicate`)."""
  cfg = model.config
  bucket = batch.bucket
  conds = {job.id: _conditioning(model, job, bucket.use_cfg) for job in batch.jobs}
  template = batch.jobs[0]
  blocks = [_block(jobs, conds, batch.rows_per_device, bucket, cfg.dit.depth, template) for jobs in batch.devices]
  cat = lambda name, axis=0: np.concatenate([getattr(b, name) for b in blocks], axis=axis)  # noqa: E731
  cond = guided.GuidedConditioning(jnp.asarray(cat("cross_tokens")), jnp.asarray(cat("global_cond")),
                                   jnp.asarray(cat("guidance")))
  blending = sorted({layer for job in batch.jobs for layer in job.settings.vital_layers})
  kv = guided.KVSteps(inject_weight=jnp.asarray(cat("weights", 2)), source_index=jnp.asarray(cat("source_index")),
                      bypass=jnp.asarray(cat("bypass", 1)),
                      blend_layers=injection.layer_mask(tuple(blending), cfg.dit.depth))
  gen = template.settings.generation
  latents = sample_on_mesh(dit_params, cond, jnp.asarray(cat("x_init")), common.step_plan(gen),
                           jnp.asarray(cat("keys")), kv, jnp.asarray(cat("sample_ids")), mesh=mesh,
                           dit_config=cfg.dit, solver=bucket.sampler, use_cfg=bucket.use_cfg)
  latents = common.to_host(latents)
  out = {}
  for d, block in enumerate(blocks):
    base = d * batch.rows_per_device
    for job, offset in block.slots:
      out[job.id] = latents[base + offset:base + offset + job.n_prompts]
  return out
