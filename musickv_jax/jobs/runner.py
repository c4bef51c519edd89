"""Running prepared edit jobs: the jobs that must run alone one by one, every other job packed into
batches of rows that share one sampler call, a failure confined to the jobs of its group.

  run_plan = plan_run(jobs, rows_per_device, devices)      # the groups, and the jobs refused
  check_memory(model, run_plan.batches, budget)            # (optional) refused before anything runs
  for outcome in run(model, run_plan, mesh=..., on_progress=...):
      ... outcome.latents[job.id] -> job.result(model, latents, plan) ...

Without a mesh everything runs on one device, unpadded, a chunk of steps at a time with progress
(a batch of one job computes exactly what that job alone computes). With a data mesh (the batch
command on every local device) each batch is one call, each device running its own padded rows.

Progress is an argument: on_progress(Progress) after every chunk of steps, for the group running
(the ids of its jobs), and over the whole run. A listener may raise `Cancelled` to stop its group
at the next chunk: that group's jobs fail as cancelled and the run goes on."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from musickv_jax.checkpoint import LoadedModel
from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import batching
from musickv_jax.pipeline.plan import EditPlan
from musickv_jax.sampling import placement


class Cancelled(Exception):
  """A run (or the group of jobs running) was cancelled before its result was ready."""


@dataclasses.dataclass(frozen=True)
class Progress:
  jobs: tuple[str, ...]  # the ids of the jobs of the group running
  step: int  # steps done of this group
  steps: int  # steps of this group
  done: int  # steps done over the whole run
  total: int  # steps of the whole run


@dataclasses.dataclass
class Group:
  """Jobs sampled by one call: one job that runs alone (batch None), or a packed batch."""

  jobs: list[batching.EditJob]
  batch: batching.Batch | None = None

  @property
  def steps(self) -> int:
    return self.batch.bucket.steps if self.batch is not None else self.jobs[0].steps

  @property
  def ids(self) -> tuple[str, ...]:
    return tuple(job.id for job in self.jobs)


@dataclasses.dataclass
class RunPlan:
  groups: list[Group]
  refused: dict[str, MusicKVError]  # job id -> why it cannot run here (e.g. more prompts than a device's rows)
  rows_per_device: int
  devices: int

  @property
  def batches(self) -> list[batching.Batch]:
    return [group.batch for group in self.groups if group.batch is not None]

  @property
  def steps(self) -> int:
    return sum(group.steps for group in self.groups)


def plan_run(jobs: Sequence[batching.EditJob], rows_per_device: int, devices: int = 1) -> RunPlan:
  """The groups of a run: the batches of the jobs that share them (packed per bucket, in order),
  then every job that runs alone. A job with more prompts than a device's rows is refused (its
  SettingsError names rows_per_device)."""
  refused = {}
  for job in jobs:
    problem = batching.too_many_prompts(job, rows_per_device)
    if problem is not None:
      refused[job.id] = problem
  shared = [job for job in jobs if not job.alone and job.id not in refused]
  groups = [Group(batch.jobs, batch) for batch in batching.pack(shared, rows_per_device, devices)]
  groups += [Group([job]) for job in jobs if job.alone]
  return RunPlan(groups, refused, rows_per_device, devices)


@dataclasses.dataclass
class GroupOutcome:
  """What one group gave: each job's final latents (n, C, T) and the plan its result is read with
  (None: the job's own), or the error that failed every job of the group."""

  group: Group
  latents: dict[str, tuple[np.ndarray, EditPlan | None]]
  error: BaseException | None
  seconds: float

  def message(self, name_of: Callable[[str], str] = str) -> str:
    """The error in one line (a library error with its settings named by name_of)."""
    if isinstance(self.error, MusicKVError):
      return self.error.describe(name_of)
    text = str(self.error).strip()
    return text.splitlines()[0] if text else type(self.error).__name__


def run(model: LoadedModel, run_plan: RunPlan, *, mesh: placement.Mesh | None = None,
        on_progress: Callable[[Progress], None] | None = None) -> Iterator[GroupOutcome]:
  """Samples every group, in order, yielding each one's outcome as it finishes (see the module).
  A group that fails (a refusal of the library, the device out of memory, Cancelled) fails its
  jobs; the next group runs."""
  dit_params = placement.replicate(model.params.dit, mesh) if mesh is not None else None
  total, done = run_plan.steps, 0
  for group in run_plan.groups:
    listener = _listener(on_progress, group, done, total)
    start = time.perf_counter()
    try:
      latents = _sample(model, group, mesh, dit_params, listener)
      outcome = GroupOutcome(group, latents, None, time.perf_counter() - start)
    except (MusicKVError, jax.errors.JaxRuntimeError, Cancelled) as e:  # e.g. out of memory: these jobs fail
      outcome = GroupOutcome(group, {}, e, time.perf_counter() - start)
    done += group.steps
    yield outcome


def _listener(on_progress: Callable[[Progress], None] | None, group: Group, offset: int, total: int):
  if on_progress is None:
    return None
  return lambda step, steps: on_progress(Progress(group.ids, step, steps, offset + step, total))


def _sample(model: LoadedModel, group: Group, mesh: placement.Mesh | None, dit_params,
            listener) -> dict[str, tuple[np.ndarray, EditPlan | None]]:
  if group.batch is None:
    job = group.jobs[0]
    latents, plan = job.sample_alone(model, mesh=mesh, dit_params=dit_params, on_step=listener)
    return {job.id: (latents, plan)}
  if mesh is None:
    out = batching.run_local(model, group.batch, on_step=listener)
  else:
    out = batching.run_batch(model, dit_params, group.batch, mesh)
    if listener is not None:
      listener(group.steps, group.steps)
  return {job_id: (latents, None) for job_id, latents in out.items()}
